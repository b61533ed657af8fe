//! `cvmfs-podman profile record` with a real podman (issue 16): a container
//! of a published image runs once under the FUSE tap, and the profile lists
//! exactly what it read, against the layer serving each file, in order.
//! Needs root, podman with the cvmfs driver (CVMFS_PODMAN_TEST_PODMAN, else
//! build/bin/podman-5 or build/bin/podman), Go (to build bench/fuselat) and
//! /bin/busybox; SKIP otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cvmfs-podman");
const NAME: &str = "example.org/prof/rec:1";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn podman() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CVMFS_PODMAN_TEST_PODMAN") {
        return Some(PathBuf::from(p));
    }
    ["build/bin/podman-5", "build/bin/podman"]
        .iter()
        .map(|p| root().join(p))
        .find(|p| p.is_file())
}

/// podman 6 refuses cgroup v1 (the make targets that run it re-execute in a
/// mount namespace with cgroup2 mounted; a cargo test does not).
fn cgroup2_at_sys_fs_cgroup() -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.get(1) == Some(&"/sys/fs/cgroup") && f.get(2) == Some(&"cgroup2")
        })
    })
}

fn fuselat() -> Option<PathBuf> {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuselat");
    let go = ["/usr/local/go/bin/go", "go"]
        .into_iter()
        .find(|g| Command::new(g).arg("version").output().is_ok())?;
    Command::new(go)
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(root().join("bench/fuselat"))
        .env("GOFLAGS", "-mod=mod")
        .status()
        .ok()?
        .success()
        .then_some(out)
}

fn run(args: &[&str], envs: &[(&str, &Path)]) -> (bool, String, String) {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = c.output().expect("run cvmfs-podman");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root"]
fn privileged_record_a_container_with_podman() {
    let test = "privileged_record_a_container_with_podman";
    cvmfs_testkit::gate::require_root();
    let (Some(podman), Some(tap)) = (podman(), fuselat()) else {
        println!("SKIP: {test}: no podman with the cvmfs driver, or no Go for bench/fuselat");
        return;
    };
    if !Path::new("/bin/busybox").is_file() {
        println!("SKIP: {test}: no /bin/busybox");
        return;
    }
    if !podman.ends_with("podman-5") && !cgroup2_at_sys_fs_cgroup() {
        println!(
            "SKIP: {test}: {} is podman 6, which needs cgroup v2 at /sys/fs/cgroup (v1 here), and there is no build/bin/podman-5",
            podman.display()
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let bb = d.join("bb/bin");
    std::fs::create_dir_all(&bb).unwrap();
    std::fs::copy("/bin/busybox", bb.join("busybox")).unwrap();
    for a in ["sh", "cat"] {
        std::os::unix::fs::symlink("busybox", bb.join(a)).unwrap();
    }
    let tar = d.join("busybox.tar");
    assert!(Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(d.join("bb"))
        .arg("bin")
        .status()
        .unwrap()
        .success());
    let spec = d.join("app.spec");
    std::fs::write(
        &spec,
        "dir /app 0755\nfile /app/read 0644 \"read me\\n\"\nfile /app/unread 0644 size=65536\nfile /app/big 0644 size=1048576\n",
    )
    .unwrap();
    let oci = d.join("oci");
    let repo = d.join("repo");
    let s = |p: &Path| p.display().to_string();
    let (ok, _, err) = run(
        &["make-oci", &s(&oci), "--tag", "t", &s(&tar), &s(&spec)],
        &[],
    );
    assert!(ok, "{err}");
    let src = format!("oci:{}:t", s(&oci));
    let (ok, _, err) = run(
        &["publish", &src, "--repo", &s(&repo), "--name", NAME, "-q"],
        &[],
    );
    assert!(ok, "{err}");

    // A podman whose driver predates cvmfs.prefetch refuses the option.
    let probe = Command::new(&podman)
        .arg("--root")
        .arg(d.join("probe/root"))
        .arg("--runroot")
        .arg(d.join("probe/run"))
        .args([
            "--storage-driver",
            "cvmfs",
            "--storage-opt",
            "cvmfs.prefetch=off",
            "images",
        ])
        .output()
        .unwrap();
    let conf = root().join("tests/e2e/containers.conf");
    let envs = [("CONTAINERS_CONF", conf.as_path()), ("HOME", d)];
    let out = d.join("profile.json");
    let mut args = vec![
        "profile".to_string(),
        "record".into(),
        NAME.into(),
        "--repo".into(),
        s(&repo),
        "--podman".into(),
        s(&podman),
        "--tap".into(),
        s(&tap),
        "-o".into(),
        s(&out),
        "--publish".into(),
    ];
    if !probe.status.success() {
        args.push("--old-driver".into());
    }
    args.extend(
        ["--", "sh", "-c", "cat /app/read; cat /app/big >/dev/null"]
            .iter()
            .map(|a| a.to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, err) = run(&args, &envs);
    assert!(ok, "{stdout}{err}");
    assert!(
        stdout.contains("read me"),
        "the container's output: {stdout}"
    );
    let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let files: Vec<(u64, &str)> = p["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["layer"].as_u64().unwrap(), e["path"].as_str().unwrap()))
        .collect();
    // busybox from the base layer, then the app layer's files as read.
    let layers: Vec<&str> = p["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let chain_top = p["top-layer"].as_str().unwrap();
    let app = layers.iter().position(|l| *l == chain_top).unwrap() as u64;
    let base = 1 - app;
    assert_eq!(
        files,
        vec![(base, "bin/busybox"), (app, "app/read"), (app, "app/big")],
        "{p}"
    );
    let stored = repo.join(format!("podmanStore/cvmfs/profiles/{chain_top}.json"));
    assert!(stored.is_file());
    let (ok, out, _) = run(&["check", &s(&repo)], &[]);
    assert!(ok, "{out}");
    // Nothing of the private namespace leaked into ours.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&s(d)), "{mounts}");
}

//! A CVMFS client that claims ownership (`CVMFS_CLAIM_OWNERSHIP=yes`,
//! CVMFS's default) reports every file as owned by its own uid. The driver
//! must notice it (owner probes in the records, or the layer root for older
//! records), say so in its status with the fix, and still show the image's
//! owners. Needs root (mounts) and `fuse-overlayfs`.
//!
//! **The emulated client** is the project's FUSE view `bench/fuselat` with
//! `-claim-uid U`: it reports every entry as owned by `U:U`, as a client
//! whose `cvmfs2` runs as uid `U` does, and passes names through as they are
//! (fuse-overlayfs's `squash_to_uid=` would do the owners too, but takes the
//! raw `.wh.*` files of the layers for its own whiteouts and hides them).
//! Being a FUSE mount, the kernel's overlay stacks on it as on `cvmfs2`.
//! Without Go to build the view, the tests fail (they are privileged ones,
//! run by `make test-cvmfs` where Go is present).

mod cvmfs;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cvmfs::claim::{add_probes, disk_use, ClaimView};
use cvmfs::Style;
use cvmfs_publisher::layer_spec;

struct Published {
    t: tempfile::TempDir,
    repo: PathBuf,
    src: PathBuf,
    top: String,
    want: String,
    layers: usize,
    ids: Vec<String>,
}

/// Corpus image `name` published our way (owners kept, markers listed,
/// `ownership.json` and the tar-split for every layer), probes added when `probes`, then moved
/// to `src`: the repository's path is where a view of it gets mounted.
fn published(name: &str, probes: bool) -> Published {
    let t = tempfile::Builder::new()
        .prefix("cvmfs-claim")
        .tempdir()
        .unwrap();
    let image = cvmfs::corpus::images()
        .into_iter()
        .find(|i| i.name == name)
        .unwrap();
    let (tars, want) = cvmfs::corpus_image(t.path(), name);
    let repo = t.path().join("cvmfs/claim.example.org");
    let store = repo.join("podmanStore");
    let (layers, _) = cvmfs::publish_as(&repo, &store, &tars, Style::PublisherListed);
    cvmfs::write_owners(&store, &layers, &image.layers);
    cvmfs::write_tar_splits(&store, &layers, &tars);
    if probes {
        add_probes(&store, &layers);
    }
    let src = t.path().join("src");
    fs::rename(&repo, &src).unwrap();
    fs::create_dir(&repo).unwrap();
    Published {
        top: layers.last().unwrap().id.clone(),
        layers: layers.len(),
        ids: layers.iter().map(|l| l.id.clone()).collect(),
        t,
        repo,
        src,
        want,
    }
}

impl Published {
    fn driver(&self, tag: &str) -> cvmfs_graphdriver::Driver {
        cvmfs::repo_driver(
            &self.t.path().join(format!("graph-{tag}/cvmfs")),
            &self.t.path().join(format!("run-{tag}")),
            &self.repo,
            &self.repo.join("podmanStore"),
        )
    }

    fn home(&self, tag: &str) -> PathBuf {
        self.t.path().join(format!("graph-{tag}/cvmfs"))
    }
}

fn kernel_has_erofs() -> bool {
    fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("\terofs\n"))
}

fn status_of(d: &cvmfs_graphdriver::Driver) -> String {
    d.status()
        .into_iter()
        .find(|(k, _)| k == "CVMFS Client Owners")
        .map(|(_, v)| v)
        .expect("a CVMFS Client Owners status line")
}

/// The image through the driver, read-only and in a container (writable):
/// both must be the reference, owners included.
fn assert_exact(p: &Published, d: &cvmfs_graphdriver::Driver, what: &str) {
    let m = d.get(&p.top, None, &[]).unwrap();
    let got = layer_spec::snapshot(&m).unwrap();
    d.put(&p.top).unwrap();
    assert!(
        got == p.want,
        "{what}, read-only:\n{}",
        cvmfs::diff_lines(&p.want, &got)
    );
    d.create("ctr", Some(&p.top), true, &[]).unwrap();
    let m = d.get("ctr", None, &[]).unwrap();
    let got = layer_spec::snapshot(&m).unwrap();
    d.put("ctr").unwrap();
    d.remove("ctr").unwrap();
    assert!(
        got == p.want,
        "{what}, container:\n{}",
        cvmfs::diff_lines(&p.want, &got)
    );
}

#[test]
#[ignore = "needs root"]
fn a_client_showing_its_own_uid_is_noticed_and_the_owners_restored() {
    cvmfs_testkit::gate::require_root();
    for name in ["opaque-then-more", "hardlinks", "devices-and-fifos"] {
        let p = published(name, true);
        // The view shows every entry as 4242's, as a client whose cvmfs2
        // runs as the cvmfs user does.
        let view = ClaimView::mount(&p.src, &p.repo, Some(4242));
        assert_eq!(
            fs::metadata(p.repo.join("podmanStore")).unwrap().uid(),
            4242
        );
        // `podman info` in a process that used no layer yet: one layer of
        // the store is looked at for the status.
        let fresh = p.driver("fresh");
        let s = status_of(&fresh);
        assert!(
            s.contains("shown as 4242:4242"),
            "{name}: before any use: {s}"
        );
        fresh.cleanup().unwrap();
        let d = p.driver("claim");
        let start = Instant::now();
        assert_exact(&p, &d, name);
        let first = start.elapsed();
        let s = status_of(&d);
        assert!(
            s.contains(&format!("{}: the client does not show", p.repo.display()))
                && s.contains("shown as 4242:4242")
                && s.contains("fix: set CVMFS_CLAIM_OWNERSHIP=no in /etc/cvmfs/config.d/claim.example.org.local"),
            "{name}: {s}"
        );
        let (bytes, entries) = disk_use(&p.home("claim").join("aux"));
        let images = fs::read_dir(p.home("claim").join("aux"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("erofs".as_ref()))
            .count();
        if kernel_has_erofs() {
            // one owner image per layer, from its tar-split, nothing else
            assert_eq!(images, p.layers, "{name}: owner images");
            for id in &p.ids {
                let built = p.home("claim").join(format!("aux/v1-ts1-{id}.erofs"));
                assert!(built.is_file(), "{name}: {} built", built.display());
            }
        }
        println!(
            "MEASURE: claim-ownership view, {name} ({} layers): first get+container {:.3}s, whiteout layers {entries} entries, {} KiB",
            p.layers,
            first.as_secs_f64(),
            bytes / 1024
        );
        d.cleanup().unwrap();
        drop(view);
    }
}

#[test]
#[ignore = "needs root"]
fn a_client_claiming_as_root_and_records_without_probes() {
    cvmfs_testkit::gate::require_root();
    // cvmfs2 running as root shows every entry as 0:0: only the entries not
    // root's in the image differ (the 1000:1000 ones), found by a probe.
    let p = published("opaque-then-more", true);
    let view = ClaimView::mount(&p.src, &p.repo, Some(0));
    let d = p.driver("root");
    assert_exact(&p, &d, "claiming as root");
    let s = status_of(&d);
    assert!(s.contains("1000:1000 as published, shown as 0:0"), "{s}");
    d.cleanup().unwrap();
    drop(view);
    // Records of an older publisher (no probes): the layer root of a layer
    // that kept its owners is expected to be root's.
    let p = published("opaque-then-more", false);
    let view = ClaimView::mount(&p.src, &p.repo, Some(4242));
    let d = p.driver("old");
    assert_exact(&p, &d, "records without probes");
    let s = status_of(&d);
    assert!(
        s.contains("the layer root of layer") && s.contains("0:0 as published, shown as 4242:4242"),
        "{s}"
    );
    d.cleanup().unwrap();
    drop(view);
}

#[test]
#[ignore = "needs root"]
fn a_client_showing_the_owners_as_published_changes_nothing() {
    cvmfs_testkit::gate::require_root();
    let p = published("opaque-then-more", true);
    let view = ClaimView::mount(&p.src, &p.repo, None);
    let d = p.driver("plain");
    assert_exact(&p, &d, "plain view");
    assert_eq!(
        status_of(&d),
        "as published for every repository used so far"
    );
    // Nothing restored: no metadata copies in the whiteout layers.
    let own = fs::read_dir(p.home("plain").join("aux"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("-own")
        })
        .count();
    assert_eq!(own, 0);
    d.cleanup().unwrap();
    drop(view);
}

/// The publishing machine's `/cvmfs/<repo>`: a read-only overlay over the
/// client mount (what `cvmfs_server` mounts, with an upper for
/// transactions), unmounted on drop.
struct ServerOverlay(PathBuf);

impl ServerOverlay {
    fn mount(client: &Path, at: &Path, scratch: &Path) -> ServerOverlay {
        let (upper, work) = (scratch.join("current"), scratch.join("work"));
        fs::create_dir_all(&upper).unwrap();
        fs::create_dir_all(&work).unwrap();
        let opts = format!(
            "ro,lowerdir={},upperdir={},workdir={}",
            client.display(),
            upper.display(),
            work.display()
        );
        let ok = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay_claim", "-o", &opts])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting the server's overlay failed");
        ServerOverlay(at.to_path_buf())
    }
}

impl Drop for ServerOverlay {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
#[ignore = "needs root"]
fn restored_owners_on_the_publishing_machines_overlay() {
    cvmfs_testkit::gate::require_root();
    // The repository as a publishing machine mounts it: an overlay over the
    // client (here one that claims ownership). A container on restored
    // owners stacks an overlay on the nested owner mount on that overlay:
    // one level too many unless the nested mount takes the layers from
    // below the server's overlay.
    let p = published("opaque-then-more", true);
    let client = p.t.path().join("client");
    fs::create_dir(&client).unwrap();
    let view = ClaimView::mount(&p.src, &client, Some(4242));
    let server = ServerOverlay::mount(&client, &p.repo, &p.t.path().join("scratch"));
    let d = p.driver("server");
    assert_exact(&p, &d, "on the server's overlay");
    d.create("ctr2", Some(&p.top), true, &[]).unwrap();
    d.get("ctr2", None, &[]).unwrap();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let nested = info
        .lines()
        .find(|l| l.contains("/nested/") && l.contains(p.t.path().to_str().unwrap()))
        .expect("the nested owner mount");
    // Its layers are the client's (owner images redirect into the client
    // as data-only lower; metacopy whiteout layers stack its directories).
    let from_client = nested.contains(&format!("datadir+={}", client.display()))
        || nested.contains(&format!("{}/.layers/", client.display()));
    assert!(
        from_client && !nested.contains(&format!("{}/", p.repo.display())),
        "the nested mount takes the layers from the client below the overlay: {nested}"
    );
    d.put("ctr2").unwrap();
    d.remove("ctr2").unwrap();
    d.cleanup().unwrap();
    drop(server);
    drop(view);
}

#[test]
#[ignore = "needs root"]
fn a_damaged_owner_image_in_the_home_is_rebuilt_not_mounted() {
    cvmfs_testkit::gate::require_root();
    // A kernel without EROFS never builds owner images: this case cannot run
    // there, and must not pass without checking anything.
    assert!(
        kernel_has_erofs(),
        "no EROFS in this kernel (/proc/filesystems): owner images cannot be tested here"
    );
    let p = published("hardlinks", true);
    let view = ClaimView::mount(&p.src, &p.repo, Some(4242));
    let d = p.driver("damaged");
    assert_exact(&p, &d, "first");
    d.cleanup().unwrap();
    // A crash cannot leave a half image under its name (staging + rename),
    // but a disk or a person can: one truncated, one with a bad superblock.
    let aux = p.home("damaged").join("aux");
    let mut images: Vec<PathBuf> = fs::read_dir(&aux)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some("erofs".as_ref()))
        .collect();
    images.sort();
    assert_eq!(images.len(), p.layers);
    let bytes = fs::read(&images[0]).unwrap();
    fs::write(&images[0], &bytes[..4096]).unwrap();
    let mut other = fs::read(&images[1]).unwrap();
    other[1024..1028].copy_from_slice(b"junk");
    fs::write(&images[1], &other).unwrap();
    let d = p.driver("damaged");
    assert_exact(&p, &d, "after damage");
    for i in &images[..2] {
        let b = fs::read(i).unwrap();
        assert_eq!(
            &b[1024..1028],
            &0xE0F5_E1E2u32.to_le_bytes(),
            "{}: rebuilt",
            i.display()
        );
    }
    assert_eq!(
        fs::read(&images[0]).unwrap().len(),
        bytes.len(),
        "rebuilt whole"
    );
    d.cleanup().unwrap();
    drop(view);
}

#[test]
#[ignore = "needs root"]
fn a_tar_split_that_cannot_stand_for_its_layer_is_walked_instead() {
    cvmfs_testkit::gate::require_root();
    assert!(
        kernel_has_erofs(),
        "no EROFS in this kernel (/proc/filesystems): owner images cannot be tested here"
    );
    let p = published("hardlinks", true);
    // one layer's tar-split cut short; the other's a link to a sound copy
    // outside the repository (never read there)
    let store = p.src.join("podmanStore");
    let split = |id: &str| cvmfs_format::StorePaths::new(&store).tar_split(id);
    let cut = fs::read(split(&p.ids[0])).unwrap();
    fs::write(split(&p.ids[0]), &cut[..cut.len() / 2]).unwrap();
    let last = p.ids.last().unwrap();
    let outside = p.t.path().join("outside.tar-split.gz");
    fs::rename(split(last), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, split(last)).unwrap();
    let view = ClaimView::mount(&p.src, &p.repo, Some(4242));
    let d = p.driver("fallback");
    assert_exact(&p, &d, "walked instead");
    let aux = p.home("fallback").join("aux");
    for (i, id) in p.ids.iter().enumerate() {
        let walked = i == 0 || id == last;
        let (used, unused) = match walked {
            true => (format!("v1-{id}.erofs"), format!("v1-ts1-{id}.erofs")),
            false => (format!("v1-ts1-{id}.erofs"), format!("v1-{id}.erofs")),
        };
        assert!(aux.join(&used).is_file(), "layer {i}: {used}");
        assert!(!aux.join(&unused).exists(), "layer {i}: {unused}");
    }
    d.cleanup().unwrap();
    drop(view);
}

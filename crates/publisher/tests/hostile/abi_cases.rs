//! Hostile cases: see main.rs. Each case is a function returning an `Outcome`.
//!
//! Calls through the exported C functions (`cvmfs_driver_*`) with what a
//! hostile or buggy caller could pass: IDs that are no names (newline, `/`,
//! `..`, terminal escapes, mount option separators, invalid UTF-8, a
//! megabyte), ID maps no user namespace can have (the issue's host_id and
//! size 4294967295), NULL pointers, huge counts and labels, options with a
//! newline or a NUL. Each must give the documented code, an error naming the
//! offending argument and value (escaped: one line), and leave the driver
//! home and a canary tree beside it unchanged. Last, the 8-thread stress test
//! (`abi_stress.rs`, also run by `cargo test --test driver_stress`).

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

use cvmfs_graphdriver::ffi::*;

use crate::support::*;

use cvmfs_testkit::abi_stress;

use abi_stress::take;

pub fn cases() -> Vec<Case> {
    macro_rules! case {
        ($name:literal, $f:expr) => {
            Case {
                name: $name,
                run: || outcome($f()),
            }
        };
    }
    vec![
        case!("abi/id-with-newline", id_with_newline),
        case!("abi/id-with-slash-climbing-out", id_with_slash),
        case!("abi/id-dot-dot", id_dot_dot),
        case!("abi/id-over-long", id_over_long),
        case!("abi/id-of-a-megabyte", id_of_a_megabyte),
        case!("abi/id-invalid-utf8", id_invalid_utf8),
        case!(
            "abi/id-with-mount-option-separator",
            id_with_mount_separator
        ),
        case!("abi/id-with-terminal-escape", id_with_terminal_escape),
        case!("abi/parent-id-climbing-out", parent_id_hostile),
        case!("abi/template-id-with-newline", template_id_hostile),
        case!("abi/idmap-host-id-and-size-max", idmap_issue_case),
        case!("abi/idmap-container-range-wraps", idmap_container_wraps),
        case!("abi/idmap-size-zero", idmap_size_zero),
        case!("abi/idmap-overlapping-ranges", idmap_overlapping),
        case!("abi/idmap-too-many-ranges", idmap_too_many),
        case!("abi/idmap-json-of-a-megabyte", idmap_huge_json),
        case!("abi/null-handle-and-arguments", null_pointers),
        case!("abi/null-output-pointer", null_output),
        case!("abi/option-with-newline", option_with_newline),
        case!("abi/unknown-driver-option", unknown_driver_option),
        case!("abi/unknown-storage-option", unknown_storage_option),
        case!("abi/mount-label-of-a-megabyte", huge_mount_label),
        case!("abi/option-count-huge", huge_option_count),
        Case {
            name: "abi/option-with-nul-smuggling-lowerdir",
            run: option_with_nul,
        },
        Case {
            name: "abi/eight-threads-racing-one-handle",
            run: stress,
        },
    ]
}

/// A driver handle on a fresh home, with a canary tree beside the home that
/// hostile IDs aim at (`../../canary/...`).
struct Abi {
    scratch: abi_stress::Scratch,
    d: *mut cvmfs_driver,
    canary: Canary,
    home: PathBuf,
}

impl Abi {
    fn new() -> Abi {
        let scratch = abi_stress::Scratch::new("cvmfs-hostile-abi");
        let home = scratch.dir.path().join("graph/cvmfs");
        let run = scratch.dir.path().join("run");
        let canary = Canary::new(&scratch.dir.path().join("canary"));
        let (h, r) = (cs(home.to_str().unwrap()), cs(run.to_str().unwrap()));
        let mut d = null_mut();
        let mut err = null_mut();
        // SAFETY: valid strings and output pointers.
        let rc = unsafe { cvmfs_driver_new(h.as_ptr(), r.as_ptr(), null(), 0, &mut d, &mut err) };
        let (rc, msg) = take(rc, err);
        assert_eq!(rc, cvmfs_result::Ok, "cvmfs_driver_new: {msg}");
        Abi {
            scratch,
            d,
            canary,
            home,
        }
    }

    /// Run `call` (handle, error out) and check it was refused: code `code`,
    /// a one-line message holding each of `names`, home and canary unchanged.
    fn refused(
        &self,
        code: cvmfs_result,
        names: &[&str],
        call: impl FnOnce(*mut cvmfs_driver, *mut *mut cvmfs_error) -> cvmfs_result,
    ) -> Result<(), String> {
        let before = describe_tree(&self.home);
        let mut err = null_mut();
        let rc = call(self.d, &mut err);
        let (rc, msg) = take(rc, err);
        check_refusal(rc, &msg, code, names)?;
        ensure(
            describe_tree(&self.home) == before,
            format!("the driver home changed; message was {msg:?}"),
        )?;
        self.canary.unchanged()?;
        ensure(
            self.scratch_entries() == ["canary", "graph", "run"],
            format!("new entries beside the home: {:?}", self.scratch_entries()),
        )
    }

    fn scratch_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.scratch.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn create(&self, id: &str) {
        let id = cs(id);
        let mut err = null_mut();
        // SAFETY: valid arguments.
        let rc =
            unsafe { cvmfs_driver_create(self.d, id.as_ptr(), null(), true, null(), 0, &mut err) };
        let (rc, msg) = take(rc, err);
        assert_eq!(rc, cvmfs_result::Ok, "create: {msg}");
    }
}

impl Drop for Abi {
    fn drop(&mut self) {
        // SAFETY: the handle from cvmfs_driver_new, freed once; cleanup first.
        unsafe {
            cvmfs_driver_cleanup(self.d, null_mut());
            cvmfs_driver_free(self.d);
        }
    }
}

fn cs(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn check_refusal(
    rc: cvmfs_result,
    msg: &str,
    code: cvmfs_result,
    names: &[&str],
) -> Result<(), String> {
    ensure(rc == code, format!("code {rc}, expected {code}: {msg:?}"))?;
    for n in names {
        ensure(
            msg.contains(n),
            format!("message does not name {n:?}: {msg:?}"),
        )?;
    }
    ensure(
        !msg.chars().any(char::is_control),
        format!("message holds control characters: {msg:?}"),
    )?;
    ensure(msg.len() < 1024, format!("message of {} bytes", msg.len()))
}

/// How an ID shows in messages: quoted and escaped, as Rust's `{:?}`.
fn shown(id: &str) -> String {
    format!("{id:?}")
}

fn create_refused(id: &str, names: &[&str]) -> Result<(), String> {
    let abi = Abi::new();
    let cid = cs(id);
    abi.refused(cvmfs_result::InvalidArgument, names, |d, e| unsafe {
        // SAFETY: valid arguments.
        cvmfs_driver_create(d, cid.as_ptr(), null(), true, null(), 0, e)
    })
}

fn id_with_newline() -> Result<(), String> {
    let id = "evil\nlayer 3f2a: get: ok";
    create_refused(id, &["argument id", &shown(id), "U+000A"])
}

fn id_with_slash() -> Result<(), String> {
    let id = "../../canary/etc";
    create_refused(id, &["argument id", &shown(id), "'/'"])
}

fn id_dot_dot() -> Result<(), String> {
    let abi = Abi::new();
    for op in ["create", "remove", "get"] {
        let id = cs("..");
        let mut out: *mut c_char = null_mut();
        abi.refused(
            cvmfs_result::InvalidArgument,
            &["argument id", "\"..\"", "relative path component"],
            |d, e| unsafe {
                // SAFETY: valid arguments.
                match op {
                    "create" => cvmfs_driver_create(d, id.as_ptr(), null(), true, null(), 0, e),
                    "remove" => cvmfs_driver_remove(d, id.as_ptr(), e),
                    _ => cvmfs_driver_get(d, id.as_ptr(), null(), null(), 0, &mut out, e),
                }
            },
        )
        .map_err(|m| format!("{op}: {m}"))?;
    }
    Ok(())
}

fn id_over_long() -> Result<(), String> {
    let id = "a".repeat(129);
    let abi = Abi::new();
    let cid = cs(&id);
    let mut out: *mut c_char = null_mut();
    abi.refused(
        cvmfs_result::InvalidArgument,
        &[
            "argument id",
            &"a".repeat(80),
            "(129 bytes) is longer than 128 bytes",
        ],
        |d, e| unsafe {
            // SAFETY: valid arguments.
            cvmfs_driver_get(d, cid.as_ptr(), null(), null(), 0, &mut out, e)
        },
    )
}

fn id_of_a_megabyte() -> Result<(), String> {
    let id = "b".repeat(1 << 20);
    let abi = Abi::new();
    let cid = cs(&id);
    let mut exists = false;
    // The message shows the start of the ID and its length, not a megabyte.
    abi.refused(
        cvmfs_result::InvalidArgument,
        &["argument id", &"b".repeat(80), "(1048576 bytes)"],
        |d, e| unsafe {
            // SAFETY: valid arguments.
            cvmfs_driver_exists(d, cid.as_ptr(), &mut exists, e)
        },
    )
}

fn id_invalid_utf8() -> Result<(), String> {
    let abi = Abi::new();
    let bad = [b'l', 0xff, 0xfe, b'/', b'.', b'.', 0];
    abi.refused(
        cvmfs_result::InvalidArgument,
        &["argument id", "not valid UTF-8"],
        |d, e| unsafe {
            // SAFETY: a NUL-terminated (non-UTF-8) string.
            cvmfs_driver_remove(d, bad.as_ptr().cast(), e)
        },
    )
}

fn id_with_mount_separator() -> Result<(), String> {
    // With mount(2), `upperdir=<home>/layers/<id>/diff` would carry a
    // second lowerdir into the mount data.
    let id = "x,lowerdir=";
    create_refused(id, &["argument id", &shown(id), "','"])
}

fn id_with_terminal_escape() -> Result<(), String> {
    let id = "\u{1b}]0;pwned\u{7}\u{1b}[2J";
    let abi = Abi::new();
    let cid = cs(id);
    let mut json: *mut c_char = null_mut();
    abi.refused(
        cvmfs_result::InvalidArgument,
        &["argument id", &shown(id), "U+001B"],
        |d, e| unsafe {
            // SAFETY: valid arguments.
            cvmfs_driver_metadata(d, cid.as_ptr(), &mut json, e)
        },
    )
}

fn parent_id_hostile() -> Result<(), String> {
    let abi = Abi::new();
    let (id, parent) = (cs("child"), "../../canary");
    let cparent = cs(parent);
    abi.refused(
        cvmfs_result::InvalidArgument,
        &["argument parent", &shown(parent)],
        |d, e| unsafe {
            // SAFETY: valid arguments.
            cvmfs_driver_create(d, id.as_ptr(), cparent.as_ptr(), true, null(), 0, e)
        },
    )
}

fn template_id_hostile() -> Result<(), String> {
    let abi = Abi::new();
    let (id, template) = (cs("copy"), "tmpl\n");
    let ct = cs(template);
    abi.refused(
        cvmfs_result::InvalidArgument,
        &["argument template_id", &shown(template)],
        |d, e| unsafe {
            // SAFETY: valid arguments.
            cvmfs_driver_create_from_template(d, id.as_ptr(), ct.as_ptr(), null(), true, e)
        },
    )
}

fn range(container_id: u64, host_id: u64, size: u64) -> String {
    format!(r#"{{"container_id":{container_id},"host_id":{host_id},"size":{size}}}"#)
}

fn idmap_issue_case() -> Result<(), String> {
    let abi = Abi::new();
    let id = cs("mapped");
    let json = cs(&format!(
        r#"{{"uids":[{}],"gids":[]}}"#,
        range(0, 4294967295, 4294967295)
    ));
    abi.refused(
        cvmfs_result::InvalidArgument,
        &[
            "argument id_mappings_json",
            "uid range 0 (container_id 0 host_id 4294967295 size 4294967295) runs past 4294967295",
        ],
        |d, e| unsafe {
            // SAFETY: valid arguments.
            cvmfs_driver_create_mapped(d, id.as_ptr(), null(), true, null(), 0, json.as_ptr(), e)
        },
    )
}

fn idmap_container_wraps() -> Result<(), String> {
    let abi = Abi::new();
    abi.create("layer");
    let id = cs("layer");
    let json = cs(&format!(
        r#"{{"gids":[{},{}]}}"#,
        range(0, 100000, 10),
        range(4294967295, 200000, 2)
    ));
    let opts = cvmfs_apply_diff_options {
        id_mappings_json: json.as_ptr(),
        mount_label: null(),
        ignore_chown_errors: false,
        has_force_mask: false,
        force_mask: 0,
    };
    let mut size = 0i64;
    abi.refused(
        cvmfs_result::InvalidArgument,
        &[
            "argument opts.id_mappings_json",
            "gid range 1 (container_id 4294967295 host_id 200000 size 2) runs past",
        ],
        |d, e| unsafe {
            // SAFETY: valid arguments; the descriptor is never reached.
            cvmfs_driver_apply_diff(d, id.as_ptr(), 0, &opts, &mut size, e)
        },
    )
}

fn idmap_size_zero() -> Result<(), String> {
    let abi = Abi::new();
    abi.create("layer");
    let id = cs("layer");
    let json = cs(&format!(r#"{{"uids":[{}]}}"#, range(0, 100000, 0)));
    abi.refused(
        cvmfs_result::InvalidArgument,
        &[
            "argument to_host_json",
            "uid range 0 (container_id 0 host_id 100000 size 0) has size 0",
        ],
        |d, e| unsafe {
            // SAFETY: valid arguments.
            cvmfs_driver_update_id_map(d, id.as_ptr(), null(), json.as_ptr(), e)
        },
    )
}

fn idmap_overlapping() -> Result<(), String> {
    let abi = Abi::new();
    abi.create("layer");
    let id = cs("layer");
    // Two container ranges onto one host range: host files would be owned by
    // two container IDs at once.
    let json = cs(&format!(
        r#"{{"uids":[{},{}]}}"#,
        range(0, 100000, 1000),
        range(5000, 100500, 10)
    ));
    abi.refused(
        cvmfs_result::InvalidArgument,
        &[
            "argument id_mappings_json",
            "uid ranges 0 and 1 overlap on the host side",
        ],
        |d, e| unsafe {
            // SAFETY: valid arguments; the descriptor is never reached.
            cvmfs_driver_diff(d, id.as_ptr(), null(), json.as_ptr(), 1, e)
        },
    )
}

fn idmap_too_many() -> Result<(), String> {
    let abi = Abi::new();
    let id = cs("mapped");
    let ranges: Vec<String> = (0..341u64).map(|i| range(i, 100000 + i, 1)).collect();
    let json = cs(&format!(r#"{{"uids":[{}]}}"#, ranges.join(",")));
    abi.refused(
        cvmfs_result::InvalidArgument,
        &[
            "argument id_mappings_json",
            "341 uid ranges, more than the kernel accepts (340)",
        ],
        |d, e| unsafe {
            // SAFETY: valid arguments.
            cvmfs_driver_create_mapped(d, id.as_ptr(), null(), true, null(), 0, json.as_ptr(), e)
        },
    )
}

fn idmap_huge_json() -> Result<(), String> {
    let abi = Abi::new();
    let id = cs("mapped");
    let json = cs(&format!(r#"{{"uids":[],"x":"{}"}}"#, "y".repeat(1 << 20)));
    abi.refused(
        cvmfs_result::InvalidArgument,
        &["argument id_mappings_json", "more than 65536"],
        |d, e| unsafe {
            // SAFETY: valid arguments.
            cvmfs_driver_create_mapped(d, id.as_ptr(), null(), true, null(), 0, json.as_ptr(), e)
        },
    )
}

fn null_pointers() -> Result<(), String> {
    let abi = Abi::new();
    let id = cs("layer");
    let mut out: *mut c_char = null_mut();
    abi.refused(
        cvmfs_result::InvalidArgument,
        &["argument driver is NULL"],
        |_, e| unsafe {
            // SAFETY: NULL handle on purpose.
            cvmfs_driver_get(null(), id.as_ptr(), null(), null(), 0, &mut out, e)
        },
    )?;
    abi.refused(
        cvmfs_result::InvalidArgument,
        &["argument id is NULL"],
        |d, e| unsafe {
            // SAFETY: NULL id on purpose.
            cvmfs_driver_put(d, null(), e)
        },
    )?;
    abi.refused(
        cvmfs_result::InvalidArgument,
        &["argument storage_opts is NULL but its count is 3"],
        |d, e| unsafe {
            // SAFETY: NULL list with a count on purpose.
            cvmfs_driver_create(d, id.as_ptr(), null(), true, null(), 3, e)
        },
    )?;
    // A NULL err_out still gives the code, and nothing is written anywhere.
    // SAFETY: NULL handle and error pointer on purpose.
    let rc = unsafe { cvmfs_driver_remove(null(), id.as_ptr(), null_mut()) };
    ensure(
        rc == cvmfs_result::InvalidArgument,
        format!("remove(NULL, .., NULL) gave {rc}"),
    )
}

fn null_output() -> Result<(), String> {
    let abi = Abi::new();
    abi.create("layer");
    let id = cs("layer");
    abi.refused(
        cvmfs_result::InvalidArgument,
        &["output argument path_out is NULL"],
        |d, e| unsafe {
            // SAFETY: NULL output on purpose.
            cvmfs_driver_get(d, id.as_ptr(), null(), null(), 0, null_mut(), e)
        },
    )?;
    // The refused get took no reference and mounted nothing.
    ensure(
        abi_stress::mounts_below(&abi.home).is_empty(),
        "a refused get left a mount",
    )
}

fn option_with_newline() -> Result<(), String> {
    let abi = Abi::new();
    abi.create("layer");
    let id = cs("layer");
    let opt = "ro\nlowerdir=/";
    let copt = cs(opt);
    let opts = [copt.as_ptr()];
    let mut out: *mut c_char = null_mut();
    abi.refused(
        cvmfs_result::InvalidArgument,
        &["argument options[0]", &shown(opt), "U+000A"],
        |d, e| unsafe {
            // SAFETY: valid arguments.
            cvmfs_driver_get(d, id.as_ptr(), null(), opts.as_ptr(), 1, &mut out, e)
        },
    )
}

fn unknown_driver_option() -> Result<(), String> {
    let t = abi_stress::Scratch::new("cvmfs-hostile-abi-opt");
    let home = cs(t.dir.path().join("graph/cvmfs").to_str().unwrap());
    let run = cs(t.dir.path().join("run").to_str().unwrap());
    for (opt, names) in [
        (
            "cvmfs.lowerdir=/",
            vec!["unknown option", "\"cvmfs.lowerdir\""],
        ),
        (
            "cvmfs.mountopt=nodev\nlowerdir=/",
            vec!["argument options[0]", "U+000A"],
        ),
    ] {
        let copt = cs(opt);
        let opts = [copt.as_ptr()];
        let mut d: *mut cvmfs_driver = null_mut();
        let mut err = null_mut();
        // SAFETY: valid arguments.
        let rc = unsafe {
            cvmfs_driver_new(
                home.as_ptr(),
                run.as_ptr(),
                opts.as_ptr(),
                1,
                &mut d,
                &mut err,
            )
        };
        let (rc, msg) = take(rc, err);
        check_refusal(rc, &msg, cvmfs_result::InvalidArgument, &names)
            .map_err(|m| format!("{opt:?}: {m}"))?;
        ensure(d.is_null(), "a handle was written on failure")?;
    }
    Ok(())
}

fn unknown_storage_option() -> Result<(), String> {
    let abi = Abi::new();
    let id = cs("layer");
    let opt = cs("size=1T");
    let opts = [opt.as_ptr()];
    abi.refused(
        cvmfs_result::NotSupported,
        &["layer layer", "\"size=1T\""],
        |d, e| unsafe {
            // SAFETY: valid arguments.
            cvmfs_driver_create(d, id.as_ptr(), null(), true, opts.as_ptr(), 1, e)
        },
    )
}

fn huge_mount_label() -> Result<(), String> {
    let abi = Abi::new();
    abi.create("layer");
    let id = cs("layer");
    let label = cs(&format!(
        "system_u:object_r:container_file_t:s0{}",
        ":c1".repeat(1 << 18)
    ));
    let mut out: *mut c_char = null_mut();
    abi.refused(
        cvmfs_result::InvalidArgument,
        &["argument mount_label", "more than 4096"],
        |d, e| unsafe {
            // SAFETY: valid arguments.
            cvmfs_driver_get(d, id.as_ptr(), label.as_ptr(), null(), 0, &mut out, e)
        },
    )?;
    ensure(
        abi_stress::mounts_below(&abi.home).is_empty(),
        "a refused get left a mount",
    )
}

fn huge_option_count() -> Result<(), String> {
    let abi = Abi::new();
    abi.create("layer");
    let id = cs("layer");
    let one = cs("ro");
    let opts = [one.as_ptr()];
    let mut out: *mut c_char = null_mut();
    // A count far beyond the array: refused before a single item is read.
    abi.refused(
        cvmfs_result::InvalidArgument,
        &["argument options has 1099511627776 items, more than 1024"],
        |d, e| unsafe {
            // SAFETY: the library must not read past the count check.
            cvmfs_driver_get(d, id.as_ptr(), null(), opts.as_ptr(), 1 << 40, &mut out, e)
        },
    )
}

/// C strings end at their first NUL: `"ro\0,lowerdir=<canary>"` reaches the
/// driver as `"ro"`, and the mount never sees the canary.
fn option_with_nul() -> Outcome {
    if !is_root() {
        return Outcome::Skip("needs root (real overlay mount)".into());
    }
    outcome((|| {
        let abi = Abi::new();
        abi.create("layer");
        let id = cs("layer");
        let canary = abi.canary.root.display().to_string();
        let raw: Vec<u8> = [b"ro\0,lowerdir=".as_slice(), canary.as_bytes(), b"\0"].concat();
        let opts = [raw.as_ptr().cast::<c_char>()];
        let mut out: *mut c_char = null_mut();
        let mut err = null_mut();
        // SAFETY: a NUL-terminated string (with bytes after its end).
        let rc = unsafe {
            cvmfs_driver_get(
                abi.d,
                id.as_ptr(),
                null(),
                opts.as_ptr(),
                1,
                &mut out,
                &mut err,
            )
        };
        let (rc, msg) = take(rc, err);
        ensure(
            rc == cvmfs_result::Ok,
            format!("get with \"ro\": {rc}: {msg}"),
        )?;
        // SAFETY: the path the library returned, freed once.
        let path = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        unsafe { cvmfs_string_free(out) };
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut line = info
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(path.as_str()))
            .ok_or_else(|| format!("{path} is not mounted"))?
            .to_string();
        // Lowers show as short names (lowerdir+=N): check what they name too.
        let links = cvmfs_graphdriver::mount::link_dir(Path::new(&path));
        for e in std::fs::read_dir(&links).into_iter().flatten().flatten() {
            if let Ok(target) = std::fs::read_link(e.path()) {
                line.push_str(&format!(" [{}]", target.display()));
            }
        }
        ensure(
            !line.contains(&canary),
            format!("the mount reaches the canary: {line}"),
        )?;
        ensure(
            line.split(' ')
                .nth(5)
                .is_some_and(|o| o.split(',').any(|f| f == "ro")),
            format!("the mount is not read-only: {line}"),
        )?;
        let mut err = null_mut();
        // SAFETY: valid arguments.
        let (rc, msg) = take(
            unsafe { cvmfs_driver_put(abi.d, id.as_ptr(), &mut err) },
            err,
        );
        ensure(rc == cvmfs_result::Ok, format!("put: {msg}"))?;
        abi.canary.unchanged()?;
        ensure(Path::new(&path).is_dir(), "mount point gone")
    })())
}

fn stress() -> Outcome {
    if !is_root() {
        return Outcome::Skip("needs root (real overlay mounts)".into());
    }
    let seed = abi_stress::seed();
    match abi_stress::run(seed) {
        Ok(summary) => {
            println!("  {summary}");
            Outcome::Pass
        }
        Err(why) => Outcome::Fail(format!("seed {seed}: {why}")),
    }
}

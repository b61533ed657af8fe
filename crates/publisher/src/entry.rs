//! The files a container of an image executes first: its entrypoint (or
//! command) as the kernel finds it, and the interpreter a `#!` line or an
//! ELF `PT_INTERP` names. The publisher links them from the image's start
//! directory (`cvmfs/start/<image id>/exec-N`, docs/store-format.md) so that
//! a driver on a cold CVMFS client fetches them beside the store's indexes,
//! instead of one after another once the container runs.
//!
//! Everything is resolved inside the image's flat tree without the kernel
//! following any link: the tree is unpacked from layers we did not write,
//! so a symlink may point anywhere (`/`, `..`, loops). Absolute links and
//! `..` are taken as the container sees them (relative to the tree's root,
//! never above it); more than [`MAX_LINKS`] links, a missing file or
//! anything but a regular file ends the search (the hint is only an
//! optimisation: no link costs one round trip, nothing else).

use std::fs;
use std::io::Read;
use std::path::Path;

use serde_json::Value;

/// Files linked per image at most (entrypoint, interpreter, its loader...).
pub const MAX_FILES: usize = cvmfs_format::paths::START_EXEC_MAX;
/// Symlinks followed while resolving one path (Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;
/// What a `#!` line may take (Linux reads 256 bytes of it).
const SHEBANG_MAX: usize = 256;
/// Bytes read of an ELF file to find its program interpreter.
const ELF_HEAD_MAX: u64 = 64 << 10;
/// Arguments looked at for files they name.
const MAX_ARGS: usize = 8;
/// containers' default `PATH` when the config sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The files (paths relative to `root`, the image's flat tree) a container
/// of the image with config `config` (JSON) executes first, at most
/// [`MAX_FILES`], in the order it executes them.
pub fn start_files(root: &Path, config: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<Value>(config) else {
        return Vec::new();
    };
    let c = &v["config"];
    let strings = |k: &str| -> Vec<String> {
        c[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut argv = strings("Entrypoint");
    argv.extend(strings("Cmd"));
    let path = strings("Env")
        .iter()
        .find_map(|e| e.strip_prefix("PATH=").map(String::from))
        .unwrap_or_else(|| DEFAULT_PATH.to_string());
    let workdir = c["WorkingDir"].as_str().unwrap_or("/").to_string();
    let mut files = Vec::new();
    let mut next = argv
        .first()
        .and_then(|a| find_program(root, a, &path, &workdir));
    while let Some(file) = next.take() {
        if files.len() == MAX_FILES || files.contains(&file) {
            break;
        }
        next = interpreter(root, &file, &path);
        files.push(file);
    }
    // then the files its arguments name (`sh /app/run.sh`, `python /app/main.py`)
    for arg in argv.iter().skip(1).take(MAX_ARGS) {
        if files.len() == MAX_FILES {
            break;
        }
        if let Some(file) = argument_file(root, arg, &workdir).filter(|f| !files.contains(f)) {
            files.push(file);
        }
    }
    files
}

/// A command-line argument that is a path (`/app/main.py`, `./run.sh`) to a
/// regular file of the image.
fn argument_file(root: &Path, arg: &str, workdir: &str) -> Option<String> {
    if arg.starts_with('/') {
        resolve(root, arg)
    } else if arg.starts_with("./") || arg.starts_with("../") {
        resolve(root, &format!("{workdir}/{arg}"))
    } else {
        None
    }
}

/// `program` as `execvp` finds it: a name with a `/` as a path (relative to
/// the working directory), else the first executable of that name in `PATH`.
fn find_program(root: &Path, program: &str, path: &str, workdir: &str) -> Option<String> {
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let full = if program.starts_with('/') {
            program.to_string()
        } else {
            format!("{workdir}/{program}")
        };
        return resolve(root, &full);
    }
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .find_map(|d| resolve(root, &format!("{d}/{program}")).filter(|f| executable(root, f)))
}

fn executable(root: &Path, rel: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(root.join(rel)).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// The program the kernel runs to execute `file`: a `#!` line's interpreter
/// (through `env`, the program it names), or an ELF file's `PT_INTERP`.
fn interpreter(root: &Path, file: &str, path: &str) -> Option<String> {
    let mut head = Vec::new();
    fs::File::open(root.join(file))
        .ok()?
        .take(ELF_HEAD_MAX)
        .read_to_end(&mut head)
        .ok()?;
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = &line[..line.len().min(SHEBANG_MAX)];
        let line = line.split(|&b| b == b'\n').next()?;
        let line = std::str::from_utf8(line).ok()?;
        let mut words = line.split_ascii_whitespace();
        let interp = resolve(root, words.next()?)?;
        if interp.rsplit('/').next() == Some("env") {
            if let Some(prog) = words.find(|w| !w.starts_with('-')) {
                return find_program(root, prog, path, "/");
            }
        }
        return Some(interp);
    }
    resolve(root, &elf_interp(&head)?)
}

/// The `PT_INTERP` path of a little-endian ELF64 file whose first bytes are
/// `head` (anything else: `None`).
fn elf_interp(head: &[u8]) -> Option<String> {
    const PT_INTERP: u32 = 3;
    if head.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(head.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| {
        let v = u64::from_le_bytes(head.get(o..o + 8)?.try_into().ok()?);
        usize::try_from(v).ok()
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20)?, u16_at(0x36)? as usize, u16_at(0x38)?);
    for i in 0..phnum as usize {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_INTERP {
            continue;
        }
        let (off, size) = (u64_at(ph + 0x08)?, u64_at(ph + 0x20)?);
        let bytes = head.get(off..off.checked_add(size)?)?;
        let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
        return std::str::from_utf8(bytes).ok().map(String::from);
    }
    None
}

/// `path` (as the container sees it) resolved in `root` without the kernel
/// following a link: the plain relative path of the regular file it names,
/// or `None` (missing, not a regular file, too many links).
fn resolve(root: &Path, path: &str) -> Option<String> {
    let mut done: Vec<String> = Vec::new();
    let mut todo: Vec<String> = components(path);
    todo.reverse();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(c);
        let here = root.join(done.join("/"));
        let meta = fs::symlink_metadata(&here).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return None;
            }
            let target = fs::read_link(&here).ok()?;
            let target = target.to_str()?;
            done.pop();
            if target.starts_with('/') {
                done.clear();
            }
            todo.extend(components(target).into_iter().rev());
        } else if !todo.is_empty() && !meta.is_dir() {
            return None;
        }
    }
    let rel = done.join("/");
    let meta = fs::symlink_metadata(root.join(&rel)).ok()?;
    (!rel.is_empty() && meta.is_file()).then_some(rel)
}

fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn file(root: &Path, rel: &str, content: &[u8], mode: u32) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn link(root: &Path, rel: &str, target: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    fn config(entrypoint: &[&str], cmd: &[&str], env: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "config": {"Entrypoint": entrypoint, "Cmd": cmd, "Env": env}
        }))
        .unwrap()
    }

    /// A minimal little-endian ELF64 header with one PT_INTERP program header.
    fn elf_with_interp(interp: &str) -> Vec<u8> {
        let mut b = vec![0u8; 0x40 + 0x38];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let off = b.len() as u64;
        b[0x40..0x44].copy_from_slice(&3u32.to_le_bytes());
        b[0x48..0x50].copy_from_slice(&off.to_le_bytes());
        b[0x60..0x68].copy_from_slice(&(interp.len() as u64 + 1).to_le_bytes());
        b.extend_from_slice(interp.as_bytes());
        b.push(0);
        b
    }

    #[test]
    fn a_script_s_interpreter_is_found_through_links() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        file(r, "bench/run.sh", b"#!/bin/sh\necho hi\n", 0o755);
        file(r, "bin/busybox", b"\x7fELF static", 0o755);
        link(r, "bin/sh", "busybox");
        assert_eq!(
            start_files(r, &config(&["/bench/run.sh"], &[], &[])),
            ["bench/run.sh", "bin/busybox"]
        );
    }

    #[test]
    fn a_command_is_searched_in_the_config_s_path_and_env_is_seen_through() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        file(r, "opt/app/run", b"#!/usr/bin/env -S python3\n", 0o755);
        file(r, "opt/app/notexec", b"", 0o644);
        file(r, "usr/bin/env", &elf_with_interp("/lib64/ld.so"), 0o755);
        file(
            r,
            "usr/lib/python3.11",
            &elf_with_interp("/lib64/ld.so"),
            0o755,
        );
        link(r, "usr/bin/python3", "../lib/python3.11");
        link(r, "lib64", "/usr/lib64");
        file(r, "usr/lib64/ld.so", b"\x7fELF loader", 0o755);
        let env = ["PATH=/nowhere:/opt/app:/usr/bin"];
        assert_eq!(
            start_files(r, &config(&[], &["run", "x"], &env)),
            ["opt/app/run", "usr/lib/python3.11", "usr/lib64/ld.so"]
        );
        assert_eq!(
            start_files(r, &config(&[], &["notexec"], &env)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn links_never_leave_the_tree_and_loops_end() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        file(&outside, "secret", b"#!/bin/sh\n", 0o755);
        let r = &t.path().join("root");
        fs::create_dir(r).unwrap();
        link(r, "up", "../../outside/secret");
        link(r, "abs", &outside.join("secret").display().to_string());
        link(r, "loop", "loop2");
        link(r, "loop2", "loop");
        for prog in ["/up", "/abs", "/loop", "/", "", "/nothing"] {
            assert_eq!(
                start_files(r, &config(&[prog], &[], &[])),
                Vec::<String>::new(),
                "{prog}"
            );
        }
        // `..` above the root stays at the root, as in the container
        file(r, "bin/tool", b"plain", 0o755);
        assert_eq!(
            start_files(r, &config(&["/../../bin/tool"], &[], &[])),
            ["bin/tool"]
        );
    }

    #[test]
    fn files_the_arguments_name_come_after_the_program() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        file(r, "bin/busybox", b"static", 0o755);
        link(r, "bin/sh", "busybox");
        file(r, "app/run.sh", b"echo", 0o644);
        file(r, "app/data", b"x", 0o644);
        let cfg = serde_json::to_vec(&serde_json::json!({
            "config": {"Cmd": ["sh", "-c", "/app/run.sh", "./data", "/bin/sh", "/missing"],
                       "WorkingDir": "/app"}
        }))
        .unwrap();
        assert_eq!(
            start_files(r, &cfg),
            ["bin/busybox", "app/run.sh", "app/data"]
        );
    }

    #[test]
    fn a_script_naming_itself_stops() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        file(r, "a", b"#!/b\n", 0o755);
        file(r, "b", b"#!/a\n", 0o755);
        assert_eq!(start_files(r, &config(&["/a"], &[], &[])), ["a", "b"]);
        assert_eq!(start_files(r, b"not json"), Vec::<String>::new());
    }
}

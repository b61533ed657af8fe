//! A recording fake of [`Syscalls`] for unit tests: it logs
//! every call and keeps a set of "mounted" targets, so tests check the exact
//! mount arguments without root.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{MountAttrs, OverlayMounter, Syscalls};

/// One recorded system call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCall {
    Fsopen {
        fstype: String,
    },
    FsconfigFlag {
        key: String,
    },
    FsconfigString {
        key: String,
        value: String,
    },
    FsconfigCreate,
    Fsmount {
        attrs: Vec<String>,
    },
    MoveMount {
        target: PathBuf,
    },
    Mount {
        source: String,
        target: PathBuf,
        fstype: String,
        attrs: Vec<String>,
        data: String,
    },
    Unmount {
        target: PathBuf,
    },
    /// Short links made in `dir`: `(name, target)`.
    Links {
        dir: PathBuf,
        links: Vec<(String, PathBuf)>,
    },
    RemoveLinks {
        dir: PathBuf,
    },
    /// What followed ran with `dir` as working directory, up to `LeaveDir`.
    EnterDir {
        dir: PathBuf,
    },
    LeaveDir,
}

/// Records calls; behaves like a kernel with or without `lowerdir+`.
#[derive(Debug)]
pub struct RecordingSyscalls {
    lowerdir_plus: bool,
    calls: Mutex<Vec<MountCall>>,
    mounted: Mutex<HashSet<PathBuf>>,
    fail_create: Mutex<Option<(i32, String)>>,
}

impl RecordingSyscalls {
    /// `lowerdir_plus`: whether the pretend kernel accepts `fsconfig(lowerdir+)`.
    pub fn new(lowerdir_plus: bool) -> RecordingSyscalls {
        RecordingSyscalls {
            lowerdir_plus,
            calls: Mutex::new(Vec::new()),
            mounted: Mutex::new(HashSet::new()),
            fail_create: Mutex::new(None),
        }
    }

    /// Make the next superblock creations fail with `errno`, logging `message`.
    pub fn fail_create(&self, errno: i32, message: &str) {
        *self.fail_create.lock().unwrap() = Some((errno, message.to_string()));
    }

    pub fn calls(&self) -> Vec<MountCall> {
        self.calls.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }

    /// Pretend something outside unmounted `target` (e.g. a reboot).
    pub fn forget_mount(&self, target: &Path) {
        self.mounted.lock().unwrap().remove(target);
    }

    fn push(&self, c: MountCall) {
        self.calls.lock().unwrap().push(c);
    }
}

fn names(a: MountAttrs) -> Vec<String> {
    a.names().into_iter().map(str::to_string).collect()
}

impl Syscalls for RecordingSyscalls {
    type Context = ();

    fn fsopen(&self, fstype: &str) -> io::Result<()> {
        self.push(MountCall::Fsopen {
            fstype: fstype.into(),
        });
        Ok(())
    }

    fn fsconfig_flag(&self, _: &(), key: &str) -> io::Result<()> {
        self.push(MountCall::FsconfigFlag { key: key.into() });
        Ok(())
    }

    fn fsconfig_string(&self, _: &(), key: &str, value: &str) -> io::Result<()> {
        self.push(MountCall::FsconfigString {
            key: key.into(),
            value: value.into(),
        });
        if key == "lowerdir+" && !self.lowerdir_plus {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }

    fn fsconfig_create(&self, _: &()) -> io::Result<()> {
        self.push(MountCall::FsconfigCreate);
        match &*self.fail_create.lock().unwrap() {
            Some((errno, _)) => Err(io::Error::from_raw_os_error(*errno)),
            None => Ok(()),
        }
    }

    fn context_log(&self, _: &()) -> Vec<String> {
        match &*self.fail_create.lock().unwrap() {
            Some((_, msg)) => vec![msg.clone()],
            None => Vec::new(),
        }
    }

    fn fsmount_move(&self, _: &(), attrs: MountAttrs, target: &Path) -> io::Result<()> {
        self.push(MountCall::Fsmount {
            attrs: names(attrs),
        });
        self.push(MountCall::MoveMount {
            target: target.to_path_buf(),
        });
        self.mounted.lock().unwrap().insert(target.to_path_buf());
        Ok(())
    }

    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        attrs: MountAttrs,
        data: &str,
    ) -> io::Result<()> {
        self.push(MountCall::Mount {
            source: source.into(),
            target: target.to_path_buf(),
            fstype: fstype.into(),
            attrs: names(attrs),
            data: data.into(),
        });
        self.mounted.lock().unwrap().insert(target.to_path_buf());
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        self.push(MountCall::Unmount {
            target: target.to_path_buf(),
        });
        if self.mounted.lock().unwrap().remove(target) {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        }
    }

    fn is_mounted(&self, target: &Path) -> io::Result<bool> {
        Ok(self.mounted.lock().unwrap().contains(target))
    }

    fn make_links(&self, dir: &Path, links: &[(String, PathBuf)]) -> io::Result<()> {
        self.push(MountCall::Links {
            dir: dir.to_path_buf(),
            links: links.to_vec(),
        });
        Ok(())
    }

    fn remove_links(&self, dir: &Path) -> io::Result<()> {
        self.push(MountCall::RemoveLinks {
            dir: dir.to_path_buf(),
        });
        Ok(())
    }

    fn in_dir<R: Send>(&self, dir: &Path, f: impl FnOnce() -> R + Send) -> io::Result<R> {
        self.push(MountCall::EnterDir {
            dir: dir.to_path_buf(),
        });
        let r = f();
        self.push(MountCall::LeaveDir);
        Ok(r)
    }
}

/// A mounter that only records.
pub type RecordingMounter = OverlayMounter<RecordingSyscalls>;

/// A recording mounter pretending the kernel has (or lacks) `lowerdir+`.
pub fn recording_mounter(lowerdir_plus: bool) -> RecordingMounter {
    OverlayMounter::new(RecordingSyscalls::new(lowerdir_plus))
}

//! Restored owners through owner images ([`crate::mount::owner_image`]):
//! each CVMFS layer whose owners are restored is stacked as the mounted
//! EROFS image of its tree, not as its directory plus a whiteout layer of
//! metadata copies; the repository is the stack's data-only lower.
//!
//! Images are cached in `<home>/aux/v<N>-<layer id>.erofs` (a layer ID
//! names fixed content and a fixed ownership file), checked before each
//! mount (superblock and length; a damaged one is rebuilt), and mounted
//! once at `<run>/cvmfs/erofs/<key>`, shared by every stack (`cleanup`
//! unmounts them). Used when the kernel has EROFS, the mounts are the
//! kernel's own overlays (no mount program) and not rootless (metacopy is
//! refused with userxattr); otherwise the metacopy whiteout layers are.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use crate::driver::{lock_file, Driver};
use crate::error::{Error, ErrorCode, Result};
use crate::layout::{StoreLayer, StoreLayerKind};
use crate::mount::whiteouts::Owner;
use crate::mount::{owner_image, owner_tarsplit};
use crate::stack::Member;

/// Owner images built at once at a stack's first mount.
const BUILDERS: usize = 4;

/// Whether the running kernel lists EROFS (read once).
fn kernel_has_erofs() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        fs::read_to_string("/proc/filesystems")
            .map(|f| {
                f.lines()
                    .any(|l| l.split_whitespace().last() == Some("erofs"))
            })
            .unwrap_or(false)
    })
}

impl Driver {
    /// Whether restored owners are owner images here (else metacopy
    /// whiteout layers).
    pub(crate) fn owner_images_usable(&self) -> bool {
        self.options.owner_images
            && !crate::rootless::active()
            && self.mounter.program().is_none()
            && kernel_has_erofs()
    }

    /// Replace each raw CVMFS member of `members` by its mounted owner image
    /// (when any of them has its owners restored); returns the data-only
    /// lowers the images redirect into (each repository's root; below the
    /// repository's own overlay when `unstacked`, as the members then are).
    /// A layer without ownership metadata gets an image with the owners as
    /// shown: overlay refuses a lower inside a data-only lower ("overlapping
    /// lowerdir path"), so no CVMFS directory of a repository stays in the
    /// stack beside it. Where one would (a layer of another kind inside the
    /// repository), nothing is replaced and `[]` returned: the metacopy
    /// whiteout layers serve.
    pub(crate) fn use_owner_images(
        &self,
        members: &mut [Member],
        unstacked: bool,
    ) -> Result<Vec<PathBuf>> {
        let mut planned: Vec<(usize, &StoreLayer, PathBuf)> = Vec::new();
        let mut data: Vec<PathBuf> = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let Some(s) = m.raw else { continue };
            let StoreLayerKind::Cvmfs { repository, .. } = &s.kind else {
                continue;
            };
            let Ok(rel) = s.content_dir.strip_prefix(repository) else {
                return Ok(Vec::new());
            };
            let root = match unstacked {
                true => self
                    .layout
                    .unstacked_dir(repository, repository)
                    .unwrap_or_else(|| repository.clone()),
                false => repository.clone(),
            };
            planned.push((i, s, rel.to_path_buf()));
            if !data.contains(&root) {
                data.push(root);
            }
        }
        let replaced = |i: usize| planned.iter().any(|p| p.0 == i);
        let inside_data = members
            .iter()
            .enumerate()
            .any(|(i, m)| !replaced(i) && data.iter().any(|d| m.dir.starts_with(d)));
        if inside_data {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + self.options.whiteout_timeout;
        let mounted = self.mount_owner_images(&planned, deadline)?;
        for (i, at) in mounted {
            members[i].dir = at.clone();
            members[i].short = at;
            members[i].raw = None;
        }
        Ok(data)
    }

    /// Mount the owner images of `planned` layers, building the missing ones
    /// [`BUILDERS`] at a time: the walks wait on the repository (one lookup
    /// and one xattr list per entry), which answers several at once.
    fn mount_owner_images(
        &self,
        planned: &[(usize, &StoreLayer, PathBuf)],
        deadline: Instant,
    ) -> Result<Vec<(usize, PathBuf)>> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(Vec::with_capacity(planned.len()));
        std::thread::scope(|scope| {
            for _ in 0..BUILDERS.min(planned.len()) {
                scope.spawn(|| loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((i, s, rel)) = planned.get(k) else {
                        break;
                    };
                    let owners = s.owners.as_ref().map(|o| o.as_slice());
                    let r = self.owner_image_mount(s, rel, owners, deadline);
                    let failed = r.is_err();
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((*i, r));
                    if failed {
                        // the others stop at their next layer
                        next.store(planned.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        let mut out = Vec::with_capacity(planned.len());
        let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        results.sort_by_key(|r| r.0);
        for (i, r) in results {
            out.push((i, r?));
        }
        Ok(out)
    }

    /// The mount point of `s`'s owner image, built and mounted if needed:
    /// from the layer's tar-split when it has one (and ownership metadata
    /// the tar must agree with), else from a walk of the layer. An image
    /// already built either way is used as it is; a tar-split that cannot
    /// stand for the layer is reported on stderr and the layer walked.
    fn owner_image_mount(
        &self,
        s: &StoreLayer,
        rel: &Path,
        owners: Option<&[Owner]>,
        deadline: Instant,
    ) -> Result<PathBuf> {
        // Owners as shown are the client's: another image per client owner.
        let shown = match owners {
            Some(_) => String::new(),
            None => {
                let (uid, gid) = s.client_shows.unwrap_or_default();
                format!("-as{uid}.{gid}")
            }
        };
        let walk_key = format!("v{}-{}{shown}", owner_image::IMAGE_VERSION, s.id);
        let Some(owners) = owners else {
            let build = |image: &Path| self.build_owner_image(s, rel, None, deadline, image);
            return self.keyed_image_mount(s, &walk_key, &build);
        };
        let walk = |image: &Path| self.build_owner_image(s, rel, Some(owners), deadline, image);
        let split_key = format!(
            "v{}-ts{}-{}",
            owner_image::IMAGE_VERSION,
            owner_tarsplit::TARSPLIT_VERSION,
            s.id
        );
        // Built or mounted already: no look at the repository.
        if !self.image_ready(&split_key)?
            && (self.image_ready(&walk_key)? || self.tar_split_of(s).is_none())
        {
            return self.keyed_image_mount(s, &walk_key, &walk);
        }
        let unusable = std::cell::RefCell::new(None);
        let from_split = |image: &Path| {
            let Some(split) = self.tar_split_of(s) else {
                *unusable.borrow_mut() = Some(format!("layer {}: its tar-split is gone", s.id));
                return Err(Error::new(
                    ErrorCode::Io,
                    format!("layer {}: no tar-split", s.id),
                ));
            };
            let built = (split.as_path(), deadline, &unusable);
            self.build_from_tar_split(s, rel, owners, built, image)
        };
        match self.keyed_image_mount(s, &split_key, &from_split) {
            Ok(at) => Ok(at),
            Err(e) => match unusable.into_inner() {
                Some(why) => {
                    eprintln!("cvmfs: {why}; walking the layer instead");
                    self.keyed_image_mount(s, &walk_key, &walk)
                }
                None => Err(e),
            },
        }
    }

    /// Whether the image `key` is mounted or built soundly (a hint: the
    /// mount checks again under the lock).
    fn image_ready(&self, key: &str) -> Result<bool> {
        let image = self.store.aux_dir().join(format!("{key}.erofs"));
        Ok(self
            .mounter
            .is_mounted(&self.run_dir.join("erofs").join(key))?
            || owner_image::image_is_sound(&image))
    }

    /// `s`'s tar-split, when its store has one: a regular file inside the
    /// layer's repository (a store's view links into it; a link leading
    /// elsewhere is not followed there).
    fn tar_split_of(&self, s: &StoreLayer) -> Option<PathBuf> {
        let StoreLayerKind::Cvmfs { repository, .. } = &s.kind else {
            return None;
        };
        let p = cvmfs_format::StorePaths::new(&s.store).tar_split(&s.id);
        let real = fs::canonicalize(p).ok()?;
        let inside = fs::canonicalize(repository).is_ok_and(|r| real.starts_with(r));
        (inside && fs::metadata(&real).is_ok_and(|m| m.is_file())).then_some(real)
    }

    /// The mount point of image `key`, built by `build` into its file in the
    /// home when missing or damaged, mounted once under the run directory.
    fn keyed_image_mount(
        &self,
        s: &StoreLayer,
        key: &str,
        build: &dyn Fn(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let target = self.run_dir.join("erofs").join(key);
        let locks = self.run_dir.join("erofs-locks");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&locks)
            .map_err(|e| Error::io("create run directory", &locks, e))?;
        let _lock = lock_file(&locks.join(key), &format!("layer {}: owner image", s.id))?;
        if self.mounter.is_mounted(&target)? {
            return Ok(target);
        }
        let image = self.store.aux_dir().join(format!("{key}.erofs"));
        if !owner_image::image_is_sound(&image) {
            // A damaged image (crash during an older build cannot leave one,
            // but disks and people can) is replaced.
            if image.exists() {
                fs::remove_file(&image)
                    .map_err(|e| Error::io("remove damaged owner image", &image, e))?;
            }
            build(&image)?;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&target)
            .map_err(|e| Error::io("create owner image mount point", &target, e))?;
        self.mounter
            .mount_erofs(&image, &target)
            .map_err(|e| e.context(format!("layer {}: owner image", s.id)))?;
        Ok(target)
    }

    /// Builds `s`'s image from tar-split `split`; when the tar-split cannot
    /// stand for the layer (anything but the time limit), says why in
    /// `unusable` too.
    fn build_from_tar_split(
        &self,
        s: &StoreLayer,
        rel: &Path,
        owners: &[Owner],
        (split, deadline, unusable): (&Path, Instant, &std::cell::RefCell<Option<String>>),
        image: &Path,
    ) -> Result<()> {
        let what = || {
            format!(
                "layer {} ({}, record {}): build owner image {} from its tar-split",
                s.id,
                s.content_dir.display(),
                s.record_path.display(),
                image.display()
            )
        };
        let img = owner_tarsplit::layer_image_from_tar_split(
            &s.content_dir,
            rel,
            split,
            owners,
            Some(deadline),
        )
        .map_err(|e| {
            let message = format!("{}: {e}", what());
            if e.kind() != std::io::ErrorKind::TimedOut {
                *unusable.borrow_mut() = Some(message.clone());
            }
            Error::new(ErrorCode::Io, message)
        })?;
        let staging = self.store.staging_name("erofs", &s.id);
        owner_image::write_image(&img, &staging, image)
            .map_err(|e| Error::new(ErrorCode::Io, format!("{}: {e}", what())))
    }

    fn build_owner_image(
        &self,
        s: &StoreLayer,
        rel: &Path,
        owners: Option<&[Owner]>,
        deadline: Instant,
        image: &Path,
    ) -> Result<()> {
        let what = || {
            let owners_file = match owners {
                Some(_) => format!(
                    ", ownership file {}",
                    s.record_path
                        .with_file_name(crate::mount::whiteouts::OWNERSHIP_FILE)
                        .display()
                ),
                None => String::new(),
            };
            format!(
                "layer {} ({}, record {}{owners_file}): build owner image {}",
                s.id,
                s.content_dir.display(),
                s.record_path.display(),
                image.display()
            )
        };
        let img = owner_image::layer_image(&s.content_dir, rel, owners, Some(deadline))
            .map_err(|e| Error::new(ErrorCode::Io, format!("{}: {e}", what())))?;
        let staging = self.store.staging_name("erofs", &s.id);
        owner_image::write_image(&img, &staging, image)
            .map_err(|e| Error::new(ErrorCode::Io, format!("{}: {e}", what())))
    }
}

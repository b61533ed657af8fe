//! Stack composition: which directories one overlay mount of a layer stacks,
//! in which order, with which generated whiteout layers between them.
//!
//! A stack is made of [`Member`]s (a layer's content directory, an earlier
//! upper, a nested mount), topmost first. Raw-whiteout CVMFS layers get an
//! auxiliary whiteout layer above them ([`Driver::interleave`], built in an
//! [`AuxBatch`]); a published flat tree may stand in for a chain
//! ([`FlatStandIn`]); a stack deeper than overlayfs accepts, or one with
//! restored owners under a writable layer, is partly mounted on its own
//! ([`Driver::nested_lower`]) and used as one lower directory.

use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::driver::{lock_file, Driver, Layer, MAX_LOWERS};
use crate::error::{Error, ErrorCode, Result};
use crate::layout::{StoreLayer, StoreLayerKind, Whiteouts};
use crate::mount::{whiteouts, OverlaySpec};

/// The record of a CVMFS layer whose directory holds raw OCI `.wh.*` markers.
pub(crate) fn raw(l: &Layer) -> Option<&StoreLayer> {
    match l {
        Layer::Store(
            s @ StoreLayer {
                kind:
                    StoreLayerKind::Cvmfs {
                        whiteouts: Whiteouts::OciRaw,
                        ..
                    },
                ..
            },
        ) => Some(s),
        _ => None,
    }
}

/// Cache key of the auxiliary layer between `upper` and `lower`; `None` when
/// none is needed (no raw layer, or a raw layer with nothing below it).
fn aux_key(upper: Option<&StoreLayer>, lower: Option<&StoreLayer>) -> Option<String> {
    let v = whiteouts::AUX_VERSION;
    // Restored owners are part of the content: a different key. Rootless
    // builds restore no owners and use user.* xattrs: another suffix.
    let own = match lower.and_then(restore_of) {
        Some(whiteouts::Restore::Every(_)) => {
            let (uid, gid) = lower.and_then(|l| l.client_shows).unwrap_or_default();
            format!("-own-as{uid}.{gid}")
        }
        Some(whiteouts::Restore::Listed(_)) => "-own".into(),
        None => String::new(),
    };
    // Through an ID-mapped view the layers' directories show other owners,
    // which the whiteout layers copy: another suffix (issue 15 hook).
    let viewed = [upper, lower]
        .iter()
        .flatten()
        .any(|l| crate::rootless::is_in_view(&l.content_dir));
    let ux = format!(
        "{}{}",
        crate::rootless::aux_key_suffix(),
        if viewed { "-idm" } else { "" }
    );
    match (upper, lower) {
        (Some(u), Some(l)) => Some(format!("v{v}-{}-{}{own}{ux}", u.id, l.id)),
        (Some(u), None) => Some(format!("v{v}-{}-local{ux}", u.id)),
        (None, Some(l)) => Some(format!("v{v}-top-{}{own}{ux}", l.id)),
        (None, None) => None,
    }
}

/// Which owners the whiteout layer above `l` restores: none rootless (it
/// needs metacopy) or without ownership metadata; the listed ones when the
/// layer shows every other entry as root's (the owners were lost, or the
/// client claims ownership as root); else every entry shown otherwise than
/// in the image (a client that shows its own uid, [`crate::claim`]).
fn restore_of(l: &StoreLayer) -> Option<whiteouts::Restore<'_>> {
    let owners = l.owners.as_deref().filter(|_| !crate::rootless::active())?;
    Some(match l.client_shows {
        Some(shown) if shown != (0, 0) => whiteouts::Restore::Every(owners),
        _ => whiteouts::Restore::Listed(owners),
    })
}

/// The whiteout layers one stack needs that were not built yet, and the
/// markers of its layers. Each is built in the staging area; [`finish`]
/// makes them durable with one `syncfs` (not one per directory: a deep
/// stack builds dozens at its first mount) and then gives each its final
/// name by an atomic rename, so a crash leaves either nothing under a final
/// name or a complete directory.
///
/// [`finish`]: AuxBatch::finish
#[derive(Default)]
pub(crate) struct AuxBatch {
    /// (staging directory, final name)
    staged: Vec<(PathBuf, PathBuf)>,
    /// Markers found by walking a layer, by layer ID: each layer is walked
    /// once per stack even though it is in two pairs.
    scanned: std::collections::HashMap<String, Arc<Vec<whiteouts::Marker>>>,
    /// When building this stack's whiteout layers must have ended (set at
    /// the first one: `cvmfs.whiteout_timeout` from then).
    deadline: Option<std::time::Instant>,
}

impl AuxBatch {
    /// The markers of `l`: as its record lists them, else found by walking it.
    fn markers_of(
        &mut self,
        l: Option<&StoreLayer>,
        what: impl Fn(&StoreLayer) -> String,
    ) -> Result<Arc<Vec<whiteouts::Marker>>> {
        let Some(l) = l else {
            return Ok(Arc::default());
        };
        if let Some(m) = &l.markers {
            return Ok(m.clone());
        }
        if let Some(m) = self.scanned.get(&l.id) {
            return Ok(m.clone());
        }
        let m = Arc::new(
            whiteouts::scan_markers_until(&l.content_dir, self.deadline).map_err(|e| {
                Error::new(
                    ErrorCode::Repository,
                    format!("{}: looking for whiteout markers: {e}", what(l)),
                )
            })?,
        );
        self.scanned.insert(l.id.clone(), m.clone());
        Ok(m)
    }

    fn finish(mut self) -> Result<()> {
        let staged = std::mem::take(&mut self.staged);
        let Some((first, _)) = staged.first() else {
            return Ok(());
        };
        let mut result = File::open(first)
            .and_then(|f| {
                rustix::fs::syncfs(&f)
                    .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
            })
            .map_err(|e| Error::io("sync new whiteout layers", first, e));
        for (staging, built) in &staged {
            if result.is_ok() {
                result = match rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    staging,
                    rustix::fs::CWD,
                    built,
                    rustix::fs::RenameFlags::NOREPLACE,
                ) {
                    Ok(()) => continue,
                    // Someone else finished the same build first: theirs is equal.
                    Err(rustix::io::Errno::EXIST) | Err(rustix::io::Errno::NOTEMPTY) => Ok(()),
                    Err(e) => Err(Error::errno("publish whiteout layer", built, e)),
                };
            }
            let _ = crate::store::remove_tree(staging);
        }
        result
    }

    fn abandon(mut self) {
        for (staging, _) in std::mem::take(&mut self.staged) {
            let _ = crate::store::remove_tree(&staging);
        }
    }
}

/// A flat root filesystem standing in for a store layer and its chain.
struct FlatStandIn {
    /// The store layer it replaces (with everything below it).
    stands_for: String,
    /// The tree as a raw-whiteout layer without markers, so that the usual
    /// whiteout layer above it hides its CVMFS catalog marker.
    layer: StoreLayer,
}

/// What a nested (separately mounted, read-only) part of a stack is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NestedKind {
    /// The bottom of a stack too deep for one mount; the whiteout layer
    /// hiding its top layer's markers stays in the stack above.
    Bottom,
    /// A whole CVMFS stack with restored owners, under a writable layer.
    Full,
}

/// One directory of a stack being composed.
pub(crate) struct Member<'a> {
    pub(crate) dir: PathBuf,
    /// Short path for the mount(2) fallback.
    pub(crate) short: PathBuf,
    /// The layer whose content directory this is (None: an earlier upper or a
    /// nested mount).
    pub(crate) layer: Option<&'a Layer>,
    /// Its record when it is a raw-whiteout CVMFS layer.
    pub(crate) raw: Option<&'a StoreLayer>,
}

impl Member<'_> {
    pub(crate) fn extra(dir: PathBuf) -> Self {
        Member {
            short: dir.clone(),
            dir,
            layer: None,
            raw: None,
        }
    }
}

impl Driver {
    /// The auxiliary lower directory that goes between `upper` and `lower`
    /// (either a raw-whiteout CVMFS layer, see [`mount::whiteouts`]), cached in
    /// `<home>/aux/`; `None` when neither has markers (when the markers had
    /// to be looked for, remembered by an empty `<key>.none` file). `upper`'s
    /// parent is `lower` whenever both are given, so the pair of IDs names
    /// fixed content. A missing directory is built into the staging area and
    /// queued in `batch`, which makes it appear under its final name
    /// ([`AuxBatch::finish`]): the returned path exists only after that.
    fn aux_between(
        &self,
        upper: Option<&StoreLayer>,
        lower: Option<&StoreLayer>,
        batch: &mut AuxBatch,
    ) -> Result<Option<PathBuf>> {
        let Some(key) = aux_key(upper, lower) else {
            return Ok(None);
        };
        let dir = self.store.aux_dir();
        let built = dir.join(&key);
        let none = dir.join(format!("{key}.none"));
        if built.is_dir() {
            return Ok(Some(built));
        }
        let listed = |l: Option<&StoreLayer>| l.map_or(true, |l| l.markers.is_some());
        let all_listed = listed(upper) && listed(lower);
        if !all_listed && none.exists() {
            return Ok(None);
        }
        let what = |l: &StoreLayer| {
            let owners = match l.owners {
                Some(_) => format!(
                    ", ownership file {}",
                    l.record_path
                        .with_file_name(whiteouts::OWNERSHIP_FILE)
                        .display()
                ),
                None => String::new(),
            };
            format!(
                "layer {} ({}, record {}{owners})",
                l.id,
                l.content_dir.display(),
                l.record_path.display()
            )
        };
        let timeout = self.options.whiteout_timeout;
        let deadline = *batch
            .deadline
            .get_or_insert_with(|| std::time::Instant::now() + timeout);
        let (um, lm) = (
            batch.markers_of(upper, what)?,
            batch.markers_of(lower, what)?,
        );
        let restore = lower.and_then(restore_of);
        let restores = match restore {
            Some(whiteouts::Restore::Listed(o)) => !o.is_empty(),
            Some(whiteouts::Restore::Every(_)) => true,
            None => false,
        };
        // The topmost one always hides the CVMFS catalog markers.
        let top = upper.is_none();
        if um.is_empty() && lm.is_empty() && !restores && !top {
            // Listed markers cost nothing to look at again: no file needed.
            if !all_listed {
                fs::write(&none, b"")
                    .map_err(|e| Error::io("record marker-free layers", &none, e))?;
            }
            return Ok(None);
        }
        let staging = self.store.staging_name("aux", &key);
        let built_from = || {
            [upper, lower]
                .into_iter()
                .flatten()
                .map(what)
                .collect::<Vec<_>>()
                .join(" over ")
        };
        let result = fs::create_dir(&staging).and_then(|()| {
            whiteouts::build_aux_restoring(
                &staging,
                upper.map(|u| (u.content_dir.as_path(), um.as_slice())),
                lower.map(|l| (l.content_dir.as_path(), lm.as_slice())),
                restore.unwrap_or(whiteouts::Restore::Listed(&[])),
                Some(deadline),
            )
        });
        if let Err(e) = result {
            let _ = crate::store::remove_tree(&staging);
            return Err(Error::new(
                ErrorCode::Io,
                format!(
                    "build whiteout layer {} for {}: {e}",
                    built.display(),
                    built_from()
                ),
            ));
        }
        batch.staged.push((staging, built.clone()));
        Ok(Some(built))
    }

    pub(crate) fn compose(
        &self,
        layer: &Layer,
        options: &[String],
    ) -> Result<(PathBuf, OverlaySpec)> {
        self.compose_at(layer, options, None)
    }

    /// The overlay spec for `layer`. A stack deeper than overlayfs's limit is
    /// split once: its bottom part, from a CVMFS layer down, is mounted on its
    /// own (read-only, see [`Driver::nested_lower`]) and used as one lower
    /// directory; `nested` says this is that bottom part (which must fit).
    fn compose_at(
        &self,
        layer: &Layer,
        options: &[String],
        nested: Option<NestedKind>,
    ) -> Result<(PathBuf, OverlaySpec)> {
        let ctx = |e: Error| e.context(format!("layer {}: get", layer.id()));
        let mut opts = self.mount_options(layer, options);
        let writable = matches!(layer, Layer::Local { .. }) && !opts.iter().any(|o| o == "ro");
        let (upper, work) = match layer {
            Layer::Local { id, home, .. } if writable => {
                let store = self.home_store(*home);
                (Some(store.diff_dir(id)), Some(store.work_dir(id)))
            }
            _ => {
                if !opts.iter().any(|o| o == "ro") {
                    opts.push("ro".into());
                }
                (None, None)
            }
        };
        let (stack, flat) = self.stack_layers(layer, writable)?;
        let mut members = self.members(layer, writable, &stack, flat.as_ref())?;
        if nested.is_some() {
            // Another overlay goes on top of this one.
            self.unstack(&mut members);
        }
        // Restored owners are metadata-only copies (metacopy) in the
        // whiteout layers, which need `metacopy=on` (refused with userxattr:
        // rootless mounts restore no owners).
        let owners = !crate::rootless::active()
            && members
                .iter()
                .any(|m| m.raw.is_some_and(|r| r.owners.is_some()));
        let mut data_lowers = Vec::new();
        if owners && upper.is_some() && nested.is_none() {
            self.nest_owned_part(&mut members).map_err(ctx)?;
        } else if owners && upper.is_none() {
            // Owner images replace the restored layers and their whiteout
            // layers; they need metacopy=on as the copies do.
            if self.owner_images_usable() {
                data_lowers = self
                    .use_owner_images(&mut members, nested.is_some())
                    .map_err(ctx)?;
            }
            if !opts.iter().any(|o| o == "metacopy=on") {
                opts.push("metacopy=on".into());
            }
        }
        // The bottom part of a split stack leaves the whiteout layer hiding its
        // top layer's markers to the stack above it (same effect, one fewer
        // directory down there).
        let mut entries = self
            .interleave(&members, nested == Some(NestedKind::Bottom))
            .map_err(ctx)?;
        // Data-only lowers count towards overlay's limit.
        let room = MAX_LOWERS - data_lowers.len();
        if entries.len() > room && nested.is_none() {
            let images = !data_lowers.is_empty();
            if let Some(split) = self
                .split_too_deep(&mut members, &entries, room, images)
                .map_err(ctx)?
            {
                entries = split;
            }
        }
        let (lowers, short_lowers) =
            self.lower_lists(layer, entries, upper.is_none(), nested.is_some(), room)?;
        Ok((
            self.merged_dir(layer),
            OverlaySpec {
                lowers,
                short_lowers,
                upper,
                work,
                options: opts,
                data_lowers,
            },
        ))
    }

    /// The configured mount options followed by the caller's.
    fn mount_options(&self, layer: &Layer, options: &[String]) -> Vec<String> {
        let mut opts: Vec<String> = self.options.mount_options.clone();
        opts.extend(options.iter().filter(|o| !o.is_empty()).cloned());
        // userxattr (and no metacopy) in a user namespace
        crate::rootless::adjust_mount_options(&mut opts, crate::rootless::active());
        if matches!(layer, Layer::Store(_)) && !opts.iter().any(|o| o == "ro") {
            opts.push("ro".into());
        }
        opts
    }

    /// The layers a mount of `layer` stacks, topmost first (without `layer`
    /// itself when it is the writable upper), and the flat tree standing in
    /// for the bottom of them, if one does. Below a layer whose flat tree can
    /// stand in for it, the chain is only read if the tree turns out unusable.
    fn stack_layers(
        &self,
        layer: &Layer,
        writable: bool,
    ) -> Result<(Vec<Layer>, Option<FlatStandIn>)> {
        let ctx = |e: Error| e.context(format!("layer {}: get", layer.id()));
        let has_flat = |l: &Layer| self.flat_of(l).is_some();
        let mut chain = if !writable && has_flat(layer) {
            Vec::new()
        } else {
            self.chain_until(layer, "get", has_flat)?
        };
        let store_layers = std::iter::once(layer)
            .chain(&chain)
            .filter_map(|l| match l {
                Layer::Store(s) => Some(s),
                Layer::Local { .. } => None,
            });
        self.layout
            .check_stack_reachable(store_layers)
            .map_err(ctx)?;
        let in_stack = |chain: &[Layer]| -> Vec<Layer> {
            std::iter::once(layer)
                .filter(|_| !writable)
                .chain(chain)
                .cloned()
                .collect()
        };
        let flat = self.flat_stand_in(in_stack(&chain).iter()).map_err(ctx)?;
        if flat.is_none() && (chain.last().is_some_and(has_flat) || (!writable && has_flat(layer)))
        {
            // The flat tree does not answer: the whole chain after all.
            chain = self.chain(layer, "get")?;
        }
        Ok((in_stack(&chain), flat))
    }

    /// Every directory the stack takes, topmost first, with the layer it
    /// belongs to (None for earlier uppers) and, for raw-whiteout CVMFS
    /// layers, their record (they need auxiliary layers around them). A flat
    /// stand-in ends the list.
    fn members<'a>(
        &self,
        layer: &Layer,
        writable: bool,
        stack: &'a [Layer],
        flat: Option<&'a FlatStandIn>,
    ) -> Result<Vec<Member<'a>>> {
        let mut members: Vec<Member> = Vec::new();
        if writable {
            members.extend(self.extra_dirs(layer).into_iter().map(Member::extra));
        }
        for l in stack {
            if let Some(f) = flat.filter(|f| f.stands_for == l.id()) {
                members.push(Member {
                    dir: f.layer.content_dir.clone(),
                    short: f.layer.content_dir.clone(),
                    layer: Some(l),
                    raw: Some(&f.layer),
                });
                break;
            }
            members.push(Member {
                dir: self.content_dir(l),
                short: self.short_dir(l)?,
                layer: Some(l),
                raw: raw(l),
            });
            members.extend(self.extra_dirs(l).into_iter().map(Member::extra));
        }
        Ok(members)
    }

    /// Point the CVMFS members of a mount that another overlay will stack on
    /// at their directories below the repository's own overlay, where it is
    /// one ([`Layout::unstacked_dir`](crate::layout::Layout::unstacked_dir)):
    /// on a publishing machine `/cvmfs/<repo>` is an overlay over the
    /// client mount, and an overlay on an overlay on it exceeds the
    /// kernel's stacking depth (`maximum fs stacking depth exceeded`).
    fn unstack(&self, members: &mut [Member]) {
        for m in members.iter_mut() {
            let Some(StoreLayer {
                kind: StoreLayerKind::Cvmfs { repository, .. },
                ..
            }) = m.raw.or(match m.layer {
                Some(Layer::Store(s)) => Some(s),
                _ => None,
            })
            else {
                continue;
            };
            if let Some(dir) = self.layout.unstacked_dir(repository, &m.dir) {
                if m.short == m.dir {
                    m.short = dir.clone();
                }
                m.dir = dir;
            }
        }
    }

    /// Under a writable layer, replace the CVMFS part of the stack (from its
    /// first store layer down) by one nested read-only mount with
    /// `metacopy=on`: restored owners are metadata-only copies, and
    /// `metacopy=on` with an upper would also make the container's own
    /// copy-ups metadata-only, which its diff cannot read. Here copy-ups stay
    /// ordinary full copies.
    fn nest_owned_part(&self, members: &mut Vec<Member>) -> Result<()> {
        let Some(k) = members
            .iter()
            .position(|m| matches!(m.layer, Some(Layer::Store(_))))
        else {
            return Ok(());
        };
        let base = members[k].layer.expect("checked above");
        let lower = self.nested_lower(base, NestedKind::Full)?;
        members.truncate(k);
        members.push(Member::extra(lower));
        Ok(())
    }

    /// Split a stack whose `entries` exceed [`MAX_LOWERS`] at the highest
    /// CVMFS layer k such that the part above it, the whiteout layer right
    /// above k and the nested mount of k's stack fit; the new entries, or
    /// `None` when no CVMFS layer allows that.
    fn split_too_deep(
        &self,
        members: &mut Vec<Member>,
        entries: &[(PathBuf, PathBuf, usize)],
        room: usize,
        images: bool,
    ) -> Result<Option<Vec<(PathBuf, PathBuf, usize)>>> {
        let upto = |k: usize| entries.iter().filter(|e| e.2 <= k).count();
        let split = (1..members.len())
            .rev()
            .find(|&k| matches!(members[k].layer, Some(Layer::Store(_))) && upto(k) <= room);
        let Some(k) = split else {
            return Ok(None);
        };
        let base = members[k].layer.expect("checked above");
        let base_raw = members[k].raw;
        let lower = self.nested_lower(base, NestedKind::Bottom)?;
        members.truncate(k);
        // With owner images the nested part shows no raw markers and has
        // its owners right: no whiteout layer goes above it.
        members.push(Member {
            raw: base_raw.filter(|_| !images),
            ..Member::extra(lower)
        });
        self.interleave(members, false).map(Some)
    }

    /// The lower directories (full and short paths) of the final stack,
    /// refused when more than overlayfs accepts. Overlay needs a lower, and
    /// without an upper it wants two; `empty/` is also harmless at the
    /// bottom of any stack.
    fn lower_lists(
        &self,
        layer: &Layer,
        entries: Vec<(PathBuf, PathBuf, usize)>,
        read_only: bool,
        nested: bool,
        room: usize,
    ) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
        let mut lowers: Vec<PathBuf> = Vec::with_capacity(entries.len() + 1);
        let mut short: Vec<PathBuf> = Vec::with_capacity(entries.len() + 1);
        for (dir, short_dir, _) in entries {
            lowers.push(dir);
            short.push(short_dir);
        }
        if lowers.is_empty() || (read_only && (lowers.len() < 2 || lowers.len() < room)) {
            let empty = self.store.empty_dir();
            lowers.push(empty.clone());
            short.push(empty);
        }
        if lowers.len() > room {
            return Err(Error::not_supported(format!(
                "layer {}: get: the stack needs {} lower directories, more than overlayfs accepts ({MAX_LOWERS}){}",
                layer.id(),
                lowers.len() + MAX_LOWERS - room,
                if nested { " (in its nested part)" } else { "" }
            )));
        }
        Ok((lowers, short))
    }

    /// The published flat root filesystem that can stand in for the first
    /// store layer of `stack` (topmost first) whose record names one, and for
    /// everything below it: the publisher stated that it equals that layer's
    /// chain applied (`docs/cvmfs-layers.md`, *Flat trees*). One lower
    /// directory instead of the chain and its whiteout layers: missing-path
    /// lookups (every `PATH` search) cost one directory, not one per layer,
    /// and nothing is built on local disk but the whiteout layer hiding the
    /// tree's catalog marker. Not used when `cvmfs.use_flat=false` or when
    /// the tree does not answer (the layers are used instead: same content).
    fn flat_stand_in<'a>(
        &self,
        stack: impl Iterator<Item = &'a Layer>,
    ) -> Result<Option<FlatStandIn>> {
        if !self.options.use_flat {
            return Ok(None);
        }
        for l in stack {
            let Layer::Store(s) = l else { continue };
            let Some(dir) = &s.flat else { continue };
            let layer = StoreLayer {
                // Its whiteout layer is cached under a name of its own.
                id: format!("{}-flat", s.id),
                content_dir: dir.clone(),
                markers: Some(Arc::default()),
                owners: None,
                flat: None,
                ..s.clone()
            };
            // A tree that leaves the repository is an error (the record is
            // hostile or corrupt); one that does not answer is worked around.
            if self.layout.check_beneath(&layer, "flat")?.is_ok() {
                return Ok(Some(FlatStandIn {
                    stands_for: s.id.clone(),
                    layer,
                }));
            }
        }
        Ok(None)
    }

    /// The lower directories of `members` with the auxiliary whiteout layers
    /// inserted, each tagged with the index of the member it belongs to (an
    /// auxiliary layer with the member below it).
    /// With `skip_top`, no auxiliary layer goes above the first member.
    pub(crate) fn interleave(
        &self,
        members: &[Member],
        skip_top: bool,
    ) -> Result<Vec<(PathBuf, PathBuf, usize)>> {
        let mut out = Vec::with_capacity(members.len() * 2);
        let mut batch = AuxBatch::default();
        let mut above: Option<&StoreLayer> = None;
        let built = (|| {
            for (i, m) in members.iter().enumerate() {
                if (above.is_some() || m.raw.is_some()) && !(skip_top && i == 0) {
                    if let Some(aux) = self.aux_between(above, m.raw, &mut batch)? {
                        out.push((aux.clone(), aux, i));
                    }
                }
                out.push((m.dir.clone(), m.short.clone(), i));
                above = m.raw;
            }
            Ok(())
        })();
        match built {
            Ok(()) => batch.finish()?,
            Err(e) => {
                batch.abandon();
                return Err(e);
            }
        }
        Ok(out)
    }

    /// Mount the stack of store layer `base` read-only at
    /// `<run_root>/cvmfs/nested/<id>`, for use as one lower directory of a
    /// deeper stack, or reuse that mount. It holds no state and is shared by
    /// every stack above it; `cleanup` unmounts it.
    fn nested_lower(&self, base: &Layer, kind: NestedKind) -> Result<PathBuf> {
        let id = base.id();
        let name = match kind {
            NestedKind::Bottom => id.to_string(),
            NestedKind::Full => format!("{id}.full"),
        };
        let target = self.run_dir.join("nested").join(&name);
        // Not in mounts/: that directory is named by layer IDs, and a layer
        // whose ID were "nested-<name>" would share (and deadlock on) this lock.
        let _lock = lock_file(
            &self.run_dir.join("nested-locks").join(&name),
            &format!("layer {id}: nested mount"),
        )?;
        if self.mounter.is_mounted(&target)? {
            return Ok(target);
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&target)
            .map_err(|e| Error::io(format!("layer {id}: create nested mount point"), &target, e))?;
        let (_, spec) = self.compose_at(base, &["ro".to_string()], Some(kind))?;
        self.mounter
            .mount_overlay(&spec, &target)
            .map_err(|e| e.context(format!("layer {id}: nested mount of part of a stack")))?;
        Ok(target)
    }

    /// The lower directories below `layer` as its mount stacks them, whiteout
    /// layers included, for `changes`: what they hide (raw markers, deleted
    /// names, CVMFS catalog markers) did not exist below, so a file of that
    /// name in this layer is added. The layer itself takes part (its
    /// deletions act on the whiteout layer below it) and is then left out.
    pub(crate) fn lowers_as_mounted(&self, layer: &Layer, chain: &[Layer]) -> Result<Vec<PathBuf>> {
        let mut members: Vec<Member> = Vec::new();
        for l in std::iter::once(layer).chain(chain) {
            let dir = self.content_dir(l);
            members.push(Member {
                short: dir.clone(),
                dir,
                layer: Some(l),
                raw: raw(l),
            });
            members.extend(self.extra_dirs(l).into_iter().map(Member::extra));
        }
        Ok(self
            .interleave(&members, true)?
            .into_iter()
            .skip(1)
            .map(|(dir, _, _)| dir)
            .collect())
    }
}

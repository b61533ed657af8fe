//go:build linux && cgo

// Methods whose signature or existence depends on the containers/storage
// release. This file matches go.podman.io/storage v1.62 (Dedup since 1.57,
// DeferredRemove and GetTempDirRootDirs since 1.59, ApplyDiff without the
// parent argument since 1.62). Every release gets its own complete file,
// driver_storage_v<major>_<minor>.go; hack/gen-patches.sh puts only the one
// matching the release into that release's patch series.

package cvmfs

import (
	"path/filepath"

	graphdriver "go.podman.io/storage/drivers"
	"go.podman.io/storage/internal/dedup"
	"go.podman.io/storage/internal/tempdir"
)

// tempDirName is where the layer store recovers staged deletions for this
// driver. The core removes layers itself (crash-safe through its own staging
// directory), so nothing is staged here, but the directory is the driver's to
// name.
const tempDirName = "tempdirs"

// ApplyDiff extracts an uncompressed tar stream into the layer and returns the
// size of the layer in bytes.
func (d *Driver) ApplyDiff(id string, options graphdriver.ApplyDiffOpts) (int64, error) {
	return d.core.applyDiff(id, options)
}

// DeferredRemove removes the layer. The core already removes in two steps
// (rename into its staging directory, then delete) and recovers half-removed
// layers on the next start, so the removal is complete when this returns and
// the cleanup function has nothing left to do.
func (d *Driver) DeferredRemove(id string) (tempdir.CleanupTempDirFunc, error) {
	if err := d.Remove(id); err != nil {
		return nil, err
	}
	return func() error { return nil }, nil
}

// GetTempDirRootDirs returns the roots the layer store scans for stale
// temporary directories of this driver, one per driver home.
func (d *Driver) GetTempDirRootDirs() []string {
	var dirs []string
	for _, home := range d.homes() {
		dirs = append(dirs, filepath.Join(home, tempDirName))
	}
	return dirs
}

// Dedup deduplicates (reflinks) identical files across the given local layers.
// Layers in a CVMFS repository or a read-only image store are skipped: they are
// not ours to rewrite and take no local space.
func (d *Driver) Dedup(req graphdriver.DedupArgs) (graphdriver.DedupResult, error) {
	var dirs []string
	for _, id := range req.Layers {
		dir, err := d.core.layerContentDir(id)
		if err != nil || !d.isLocalPath(dir) {
			continue
		}
		dirs = append(dirs, dir)
	}
	if len(dirs) == 0 {
		return graphdriver.DedupResult{}, nil
	}
	r, err := dedup.DedupDirs(dirs, req.Options)
	if err != nil {
		return graphdriver.DedupResult{}, err
	}
	return graphdriver.DedupResult{Deduped: r.Deduped}, nil
}

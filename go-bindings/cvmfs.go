//go:build linux && cgo

// Package cvmfs is the containers/storage graph driver "cvmfs": read-only image
// layers are mounted straight out of a CernVM-FS repository (never copied) and
// every other layer lives on local disk, all stacked with kernel overlayfs.
//
// The driver logic lives in a Rust library (libcvmfs_graphdriver, linked
// statically through pkg-config); this package is the thin cgo binding that
// implements the graphdriver.Driver interface on top of its C ABI (core.go).
// Methods whose shape differs between containers/storage releases live in
// driver_storage_v*.go so other release lines only need another such file.
package cvmfs

/*
#cgo pkg-config: cvmfs_graphdriver
#include <stdlib.h>
#include <cvmfs_graphdriver.h>
*/
import "C"

import (
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sirupsen/logrus"
	graphdriver "go.podman.io/storage/drivers"
	"go.podman.io/storage/pkg/directory"
	"go.podman.io/storage/pkg/idtools"
)

const driverName = "cvmfs"

func init() {
	graphdriver.MustRegister(driverName, Init)
}

// Driver is the cvmfs graph driver: one handle on the Rust core, each method
// one call of its C ABI.
//
// With a separate image store (storage.conf imagestore, --image-store) the
// core keeps read-only image layers in <imagestore>/cvmfs and container
// layers in <graphroot>/cvmfs, as overlay does, and finds each layer in
// either home itself.
type Driver struct {
	core       *core
	home       string // <graphroot>/cvmfs
	imageStore string // the separate image store's root, "" without one
	// naiveDiff computes Diff/Changes/DiffSize against an arbitrary parent by
	// mounting both layers; the core only diffs a layer against its own parent.
	naiveDiff graphdriver.DiffDriver
}

// Init creates the driver for home (<graphroot>/cvmfs). It may run several
// times in one process; the core keeps shared state on disk under locks.
func Init(home string, options graphdriver.Options) (graphdriver.Driver, error) {
	opts := driverOptions(options.DriverOptions)
	d := &Driver{home: home}
	if options.ImageStore != "" && filepath.Clean(options.ImageStore) != filepath.Dir(filepath.Clean(home)) {
		d.imageStore = filepath.Clean(options.ImageStore)
		opts = append(opts, driverName+".separate_image_store="+d.imageStore)
	}
	c, err := newCore(home, options.RunRoot, opts)
	if err != nil {
		return nil, err
	}
	d.core = c
	d.naiveDiff = graphdriver.NewNaiveDiffDriver(d, d)
	return d, nil
}

// driverOptions normalises the option names containers/storage produces and
// keeps those meant for this driver. Up to storage 1.62 it writes
// "<driver>.<key>" with the configured driver name, which is empty when
// storage.conf names no driver, giving ".<key>" (the other drivers accept that
// form too). Since 1.63 generic options come without a prefix and every
// driver receives the tables of all the others ("overlay.mountopt=...",
// "vfs.sync=..."), which each driver skips, as overlay and vfs do. The core
// knows "cvmfs.<key>" and "<key>"; any other prefix reaches it and is
// rejected there, so a misspelt "cvmsf." is reported, not ignored.
func driverOptions(options []string) []string {
	out := make([]string, 0, len(options))
	for _, o := range options {
		if strings.HasPrefix(o, ".") {
			o = driverName + o
		}
		if isOtherDriversOption(o) {
			continue
		}
		out = append(out, o)
	}
	return out
}

// otherDriverNames are the in-tree drivers whose storage.conf tables storage
// hands to every driver (since 1.63).
var otherDriverNames = []string{"overlay", "overlay2", "vfs", "btrfs", "zfs"}

// isOtherDriversOption reports whether option is "<driver>.<key>=<value>" for
// another in-tree driver.
func isOtherDriversOption(option string) bool {
	key, _, _ := strings.Cut(option, "=")
	prefix, _, ok := strings.Cut(strings.ToLower(strings.TrimSpace(key)), ".")
	return ok && slices.Contains(otherDriverNames, prefix)
}

// homes lists the driver's own (writable) homes.
func (d *Driver) homes() []string {
	if d.imageStore != "" {
		return []string{d.home, filepath.Join(d.imageStore, driverName)}
	}
	return []string{d.home}
}

// String returns the driver name; metadata directories are named after it.
func (d *Driver) String() string {
	return driverName
}

// Cleanup unmounts everything this driver mounted.
func (d *Driver) Cleanup() error {
	return d.core.cleanup()
}

// Status reports low-level diagnostics, as key/value pairs.
func (d *Driver) Status() [][2]string {
	status, err := d.core.status()
	if err != nil {
		return [][2]string{{"Error", err.Error()}}
	}
	return status
}

// Metadata returns low-level information about one layer.
func (d *Driver) Metadata(id string) (map[string]string, error) {
	return d.core.metadata(id)
}

// CreateReadWrite creates a writable layer, used as a container's root.
func (d *Driver) CreateReadWrite(id, parent string, opts *graphdriver.CreateOpts) error {
	return d.create(id, parent, opts, true)
}

// Create creates a read-only (image) layer on top of parent ("" for none); the
// core puts it in the image store when there is one.
func (d *Driver) Create(id, parent string, opts *graphdriver.CreateOpts) error {
	return d.create(id, parent, opts, false)
}

func (d *Driver) create(id, parent string, opts *graphdriver.CreateOpts, readWrite bool) error {
	var storageOpts []string
	var mappings *idtools.IDMappings
	if opts != nil {
		// Sorted so the core sees the same order every time.
		for _, k := range slices.Sorted(maps.Keys(opts.StorageOpt)) {
			storageOpts = append(storageOpts, k+"="+opts.StorageOpt[k])
		}
		mappings = opts.IDMappings
	}
	// With ID mappings (a layer for a user namespace) a parentless layer's
	// root is owned by the mapped root, as the other drivers create it.
	return d.core.create(id, parent, readWrite, storageOpts, mappingsJSON(mappings))
}

// CreateFromTemplate creates a layer with the same contents and parent as the
// template layer.
func (d *Driver) CreateFromTemplate(id, template string, templateIDMappings *idtools.IDMappings, parent string, parentIDMappings *idtools.IDMappings, opts *graphdriver.CreateOpts, readWrite bool) error {
	if opts != nil && len(opts.StorageOpt) != 0 {
		return errorf("create from template", id, codeNotSupported, "storage options are not supported when creating from template %s", template)
	}
	return d.core.createFromTemplate(id, template, parent, readWrite)
}

// Remove deletes a layer. Removing a layer that does not exist succeeds, as
// with the other drivers: the layer store uses Remove to recover from
// half-finished operations.
func (d *Driver) Remove(id string) error {
	err := d.core.remove(id)
	if err != nil && isLayerUnknown(err) {
		logrus.Debugf("cvmfs: remove: layer %s does not exist", id)
		return nil
	}
	return err
}

// Exists tells whether the layer exists locally or in a configured
// repository or additional image store.
func (d *Driver) Exists(id string) bool {
	exists, err := d.core.exists(id)
	if err != nil {
		logrus.Warnf("%v", err)
		return false
	}
	return exists
}

// ProvideImage is containers/storage's ImageProvider hook (patch 0005 of
// patches/): a lookup of an image by name or ID ("image") or of layers by
// digest ("compressed-digest", "uncompressed-digest") found nothing, so the
// driver adds what key names to the DUCC stores it lists on demand. True
// when they list it now (the stores' lock files then have a new last-write
// token when it was added): the caller retries its lookup once.
func (d *Driver) ProvideImage(what, key string) (bool, error) {
	return d.core.provide(what, key)
}

// ListLayers lists the driver's own layers (not those of additional stores),
// children before parents so they can be removed in order: container layers
// (main home) come before the image layers they stack on.
func (d *Driver) ListLayers() ([]string, error) {
	return d.core.listLayers()
}

// Get mounts the layer (with its parents) and returns the mount point.
func (d *Driver) Get(id string, options graphdriver.MountOpts) (string, error) {
	// options.UidMaps/GidMaps need no action: SupportsShifting is false, so
	// the layer store only passes the mappings the layer's files were already
	// chowned to (it refuses any other mapping before calling Get), exactly as
	// overlay mounts without ID shifting in that case.
	return d.core.get(id, options.MountLabel, options.Options)
}

// Put releases one reference taken by Get, unmounting on the last one.
func (d *Driver) Put(id string) error {
	return d.core.put(id)
}

// ReadWriteDiskUsage returns the disk usage of the layer's own files.
func (d *Driver) ReadWriteDiskUsage(id string) (*directory.DiskUsage, error) {
	size, inodes, err := d.core.diskUsage(id)
	if err != nil {
		return nil, err
	}
	return &directory.DiskUsage{Size: size, InodeCount: inodes}, nil
}

// AdditionalImageStores returns the read-only image store roots the driver was
// configured with (cvmfs.imagestore=); the separate image store, which the
// store opens read-write itself, is not one of them.
func (d *Driver) AdditionalImageStores() []string {
	stores, err := d.core.additionalImageStores()
	if err != nil {
		logrus.Warnf("%v", err)
		return nil
	}
	return stores
}

// isLocalPath tells whether p is inside one of the driver's homes (a local
// layer), as opposed to a repository or a read-only image store.
func (d *Driver) isLocalPath(p string) bool {
	for _, home := range d.homes() {
		rel, err := filepath.Rel(home, p)
		if err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return true
		}
	}
	return false
}

// SupportsShifting reports that the driver cannot shift IDs at mount time;
// containers/storage then creates ID-mapped copies with UpdateLayerIDMap.
func (d *Driver) SupportsShifting(uidmap, gidmap []idtools.IDMap) bool {
	return false
}

// UpdateLayerIDMap re-owns the files the layer shows (its parents' too, as
// overlay does) from the toContainer mapping to the toHost mapping.
func (d *Driver) UpdateLayerIDMap(id string, toContainer, toHost *idtools.IDMappings, mountLabel string) error {
	return d.core.updateIDMap(id, mappingsJSON(toContainer), mappingsJSON(toHost))
}

// Version is the version of the linked Rust core.
func Version() string {
	return C.GoString(C.cvmfs_version())
}

func isLayerUnknown(err error) bool {
	return errors.Is(err, graphdriver.ErrLayerUnknown)
}

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

// Driver is the cvmfs graph driver.
//
// Without a separate image store it is one core handle on <graphroot>/cvmfs.
// With one (storage.conf imagestore, --image-store) read-only image layers live
// in <imagestore>/cvmfs, as with overlay: a second handle owns them, and each
// handle sees the other's layers as a read-only additional store, so container
// layers stack on image layers and the other way round.
type Driver struct {
	main       *core
	images     *core  // nil without a separate image store
	imageStore string // its root, "" without one
	// naiveDiff computes Diff/Changes/DiffSize against an arbitrary parent by
	// mounting both layers; the core only diffs a layer against its own parent.
	naiveDiff graphdriver.DiffDriver
}

// Init creates the driver for home (<graphroot>/cvmfs). It may run several
// times in one process; the core keeps shared state on disk under locks.
func Init(home string, options graphdriver.Options) (graphdriver.Driver, error) {
	opts := driverOptions(options.DriverOptions)
	d := &Driver{}
	if options.ImageStore != "" && filepath.Clean(options.ImageStore) != filepath.Dir(filepath.Clean(home)) {
		d.imageStore = filepath.Clean(options.ImageStore)
		graphRoot := filepath.Dir(filepath.Clean(home))
		images, err := newCore(filepath.Join(d.imageStore, driverName), options.RunRoot,
			append(slices.Clone(opts), driverName+".imagestore="+graphRoot))
		if err != nil {
			return nil, err
		}
		d.images = images
		opts = append(opts, driverName+".imagestore="+d.imageStore)
	}
	main, err := newCore(home, options.RunRoot, opts)
	if err != nil {
		return nil, err
	}
	d.main = main
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

// owner is the handle whose home holds layer id; the main one when the layer
// is unknown (its errors then name the layer).
func (d *Driver) owner(id string) *core {
	if d.images != nil {
		if meta, err := d.images.metadata(id); err == nil && meta["Kind"] == "local" {
			return d.images
		}
	}
	return d.main
}

// cores lists every handle of the driver.
func (d *Driver) cores() []*core {
	if d.images != nil {
		return []*core{d.main, d.images}
	}
	return []*core{d.main}
}

// String returns the driver name; metadata directories are named after it.
func (d *Driver) String() string {
	return driverName
}

// Cleanup unmounts everything this driver mounted.
func (d *Driver) Cleanup() error {
	var errs []error
	for _, c := range d.cores() {
		errs = append(errs, c.cleanup())
	}
	return errors.Join(errs...)
}

// Status reports low-level diagnostics, as key/value pairs.
func (d *Driver) Status() [][2]string {
	status, err := d.main.status()
	if err != nil {
		return [][2]string{{"Error", err.Error()}}
	}
	if d.imageStore != "" {
		status = append(status, [2]string{"Image Store", d.imageStore})
	}
	return status
}

// Metadata returns low-level information about one layer.
func (d *Driver) Metadata(id string) (map[string]string, error) {
	return d.owner(id).metadata(id)
}

// CreateReadWrite creates a writable layer, used as a container's root.
func (d *Driver) CreateReadWrite(id, parent string, opts *graphdriver.CreateOpts) error {
	return d.create(d.main, id, parent, opts, true)
}

// Create creates a read-only (image) layer on top of parent ("" for none); it
// goes to the image store when there is one.
func (d *Driver) Create(id, parent string, opts *graphdriver.CreateOpts) error {
	c := d.main
	if d.images != nil {
		c = d.images
	}
	return d.create(c, id, parent, opts, false)
}

func (d *Driver) create(c *core, id, parent string, opts *graphdriver.CreateOpts, readWrite bool) error {
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
	return c.create(id, parent, readWrite, storageOpts, mappingsJSON(mappings))
}

// CreateFromTemplate creates a layer with the same contents and parent as the
// template layer.
func (d *Driver) CreateFromTemplate(id, template string, templateIDMappings *idtools.IDMappings, parent string, parentIDMappings *idtools.IDMappings, opts *graphdriver.CreateOpts, readWrite bool) error {
	if opts != nil && len(opts.StorageOpt) != 0 {
		return errorf("create from template", id, codeNotSupported, "storage options are not supported when creating from template %s", template)
	}
	c := d.main
	if !readWrite && d.images != nil {
		c = d.images
	}
	return c.createFromTemplate(id, template, parent, readWrite)
}

// Remove deletes a layer. Removing a layer that does not exist succeeds, as
// with the other drivers: the layer store uses Remove to recover from
// half-finished operations.
func (d *Driver) Remove(id string) error {
	err := d.owner(id).remove(id)
	if err != nil && isLayerUnknown(err) {
		logrus.Debugf("cvmfs: remove: layer %s does not exist", id)
		return nil
	}
	return err
}

// Exists tells whether the layer exists locally or in a configured
// repository or additional image store.
func (d *Driver) Exists(id string) bool {
	// The main handle also sees the image store's layers, but only those
	// with storage-style IDs; asking each home is exact.
	for _, c := range d.cores() {
		exists, err := c.exists(id)
		if err != nil {
			logrus.Warnf("%v", err)
			continue
		}
		if exists {
			return true
		}
	}
	return false
}

// ListLayers lists the driver's own layers (not those of additional stores),
// children before parents so they can be removed in order: container layers
// (main home) come before the image layers they stack on.
func (d *Driver) ListLayers() ([]string, error) {
	var all []string
	for _, c := range d.cores() {
		layers, err := c.listLayers()
		if err != nil {
			return nil, err
		}
		all = append(all, layers...)
	}
	if all == nil {
		all = []string{}
	}
	return all, nil
}

// Get mounts the layer (with its parents) and returns the mount point.
func (d *Driver) Get(id string, options graphdriver.MountOpts) (string, error) {
	// options.UidMaps/GidMaps need no action: SupportsShifting is false, so
	// the layer store only passes the mappings the layer's files were already
	// chowned to (it refuses any other mapping before calling Get), exactly as
	// overlay mounts without ID shifting in that case.
	return d.owner(id).get(id, options.MountLabel, options.Options)
}

// Put releases one reference taken by Get, unmounting on the last one.
func (d *Driver) Put(id string) error {
	return d.owner(id).put(id)
}

// ReadWriteDiskUsage returns the disk usage of the layer's own files.
func (d *Driver) ReadWriteDiskUsage(id string) (*directory.DiskUsage, error) {
	size, inodes, err := d.owner(id).diskUsage(id)
	if err != nil {
		return nil, err
	}
	return &directory.DiskUsage{Size: size, InodeCount: inodes}, nil
}

// AdditionalImageStores returns the read-only image store roots the driver was
// configured with (cvmfs.imagestore=); the separate image store, which the
// store opens read-write itself, is not one of them.
func (d *Driver) AdditionalImageStores() []string {
	stores, err := d.main.additionalImageStores()
	if err != nil {
		logrus.Warnf("%v", err)
		return nil
	}
	var out []string
	for _, s := range stores {
		if d.imageStore == "" || filepath.Clean(s) != d.imageStore {
			out = append(out, s)
		}
	}
	return out
}

// isLocalPath tells whether p is inside one of the driver's homes (a local
// layer), as opposed to a repository or a read-only image store.
func (d *Driver) isLocalPath(p string) bool {
	for _, c := range d.cores() {
		rel, err := filepath.Rel(c.home, p)
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
	return d.owner(id).updateIDMap(id, mappingsJSON(toContainer), mappingsJSON(toHost))
}

// Version is the version of the linked Rust core.
func Version() string {
	return C.GoString(C.cvmfs_version())
}

func isLayerUnknown(err error) bool {
	return errors.Is(err, graphdriver.ErrLayerUnknown)
}

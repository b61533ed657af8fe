//go:build linux && cgo

// Package cvmfs is the containers/storage graph driver "cvmfs": read-only image
// layers are mounted straight out of a CernVM-FS repository (never copied) and
// every other layer lives on local disk, all stacked with kernel overlayfs.
//
// The driver logic lives in a Rust library (libcvmfs_graphdriver, linked
// statically through pkg-config); this package is the thin cgo binding that
// implements the graphdriver.Driver interface on top of its C ABI. Methods whose
// shape differs between containers/storage releases live in
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
	"fmt"
	"maps"
	"path/filepath"
	"runtime"
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

// Driver is the cvmfs graph driver: a handle on the Rust core plus the naive
// diff implementation it falls back to when the core cannot diff directly.
type Driver struct {
	core *core
	home string
	// naiveDiff computes Diff/Changes/DiffSize against an arbitrary parent by
	// mounting both layers; the core only diffs a layer against its own parent.
	naiveDiff graphdriver.DiffDriver
}

// Init creates the driver for home (<graphroot>/cvmfs). It may run several
// times in one process; the core keeps shared state on disk under locks.
func Init(home string, options graphdriver.Options) (graphdriver.Driver, error) {
	if options.ImageStore != "" {
		// The core keeps every writable layer under home; a split image store
		// would silently put image layers in the wrong place.
		return nil, fmt.Errorf("cvmfs: a separate image store (imagestore=%s) is not supported: %w", options.ImageStore, graphdriver.ErrNotSupported)
	}
	cHome := cString(home)
	defer cFree(cHome)
	cRunRoot := cOptString(options.RunRoot)
	defer cFree(cRunRoot)
	opts := newCStringArray(driverOptions(options.DriverOptions))
	defer opts.free()

	var handle *C.cvmfs_driver
	err := call("init", "", func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_new(cHome, cRunRoot, opts.ptr, opts.len(), &handle, errOut)
	})
	if err != nil {
		return nil, fmt.Errorf("%w (home %s)", err, home)
	}
	c := &core{handle: handle}
	// The handle is freed when it becomes garbage: containers/storage has no
	// "close" for drivers, and Cleanup must leave the driver usable. The core
	// object holds no pointer back to the Driver, so it is never part of a
	// cycle (finalizers do not run for cycles).
	runtime.SetFinalizer(c, func(c *core) { C.cvmfs_driver_free(c.handle) })
	d := &Driver{core: c, home: home}
	d.naiveDiff = graphdriver.NewNaiveDiffDriver(d, d)
	return d, nil
}

// driverOptions normalises the option names containers/storage produces: it
// writes "<driver>.<key>" with the configured driver name, which is empty when
// storage.conf names no driver, giving ".<key>" (the other drivers accept that
// form too). The core knows "cvmfs.<key>" and "<key>".
func driverOptions(options []string) []string {
	out := make([]string, 0, len(options))
	for _, o := range options {
		if strings.HasPrefix(o, ".") {
			o = driverName + o
		}
		out = append(out, o)
	}
	return out
}

// String returns the driver name; metadata directories are named after it.
func (d *Driver) String() string {
	return driverName
}

// core owns the C handle.
type core struct {
	handle *C.cvmfs_driver
}

// h is the C handle; every method that uses it defers keepAlive.
func (d *Driver) h() *C.cvmfs_driver {
	return d.core.handle
}

// keepAlive stops the finalizer from freeing the handle while a C call on it
// is still running.
func (d *Driver) keepAlive() {
	runtime.KeepAlive(d.core)
}

// Cleanup unmounts everything this driver mounted.
func (d *Driver) Cleanup() error {
	defer d.keepAlive()
	return call("cleanup", "", func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_cleanup(d.h(), errOut)
	})
}

// Status reports low-level diagnostics, as key/value pairs.
func (d *Driver) Status() [][2]string {
	defer d.keepAlive()
	var out *C.char
	err := call("status", "", func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_status(d.h(), &out, errOut)
	})
	if err != nil {
		return [][2]string{{"Error", err.Error()}}
	}
	var status [][2]string
	if err := decodeJSON("status", "", takeString(out), &status); err != nil {
		return [][2]string{{"Error", err.Error()}}
	}
	return status
}

// Metadata returns low-level information about one layer.
func (d *Driver) Metadata(id string) (map[string]string, error) {
	defer d.keepAlive()
	cID := cString(id)
	defer cFree(cID)
	var out *C.char
	err := call("metadata", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_metadata(d.h(), cID, &out, errOut)
	})
	if err != nil {
		return nil, err
	}
	var meta map[string]string
	if err := decodeJSON("metadata", id, takeString(out), &meta); err != nil {
		return nil, err
	}
	return meta, nil
}

// CreateReadWrite creates a writable layer, used as a container's root.
func (d *Driver) CreateReadWrite(id, parent string, opts *graphdriver.CreateOpts) error {
	return d.create(id, parent, opts, true)
}

// Create creates a read-only (image) layer on top of parent ("" for none).
func (d *Driver) Create(id, parent string, opts *graphdriver.CreateOpts) error {
	return d.create(id, parent, opts, false)
}

func (d *Driver) create(id, parent string, opts *graphdriver.CreateOpts, readWrite bool) error {
	defer d.keepAlive()
	var storageOpts []string
	var mappings *idtools.IDMappings
	if opts != nil {
		// Sorted so the core sees the same order every time.
		for _, k := range slices.Sorted(maps.Keys(opts.StorageOpt)) {
			storageOpts = append(storageOpts, k+"="+opts.StorageOpt[k])
		}
		mappings = opts.IDMappings
	}
	cID := cString(id)
	defer cFree(cID)
	cParent := cOptString(parent)
	defer cFree(cParent)
	arr := newCStringArray(storageOpts)
	defer arr.free()
	// With ID mappings (a layer for a user namespace) a parentless layer's
	// root is owned by the mapped root, as the other drivers create it.
	cMappings := cOptString(mappingsJSON(mappings))
	defer cFree(cMappings)
	return call("create", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_create_mapped(d.h(), cID, cParent, C.bool(readWrite), arr.ptr, arr.len(), cMappings, errOut)
	})
}

// CreateFromTemplate creates a layer with the same contents and parent as the
// template layer.
func (d *Driver) CreateFromTemplate(id, template string, templateIDMappings *idtools.IDMappings, parent string, parentIDMappings *idtools.IDMappings, opts *graphdriver.CreateOpts, readWrite bool) error {
	defer d.keepAlive()
	if opts != nil && len(opts.StorageOpt) != 0 {
		return errorf("create from template", id, codeNotSupported, "storage options are not supported when creating from template %s", template)
	}
	cID := cString(id)
	defer cFree(cID)
	cTemplate := cString(template)
	defer cFree(cTemplate)
	cParent := cOptString(parent)
	defer cFree(cParent)
	return call("create from template", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_create_from_template(d.h(), cID, cTemplate, cParent, C.bool(readWrite), errOut)
	})
}

// Remove deletes a layer. Removing a layer that does not exist succeeds, as
// with the other drivers: the layer store uses Remove to recover from
// half-finished operations.
func (d *Driver) Remove(id string) error {
	defer d.keepAlive()
	cID := cString(id)
	defer cFree(cID)
	err := call("remove", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_remove(d.h(), cID, errOut)
	})
	if err != nil && isLayerUnknown(err) {
		logrus.Debugf("cvmfs: remove: layer %s does not exist", id)
		return nil
	}
	return err
}

// Exists tells whether the layer exists locally or in a configured
// repository or additional image store.
func (d *Driver) Exists(id string) bool {
	defer d.keepAlive()
	cID := cString(id)
	defer cFree(cID)
	var exists C.bool
	if err := call("exists", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_exists(d.h(), cID, &exists, errOut)
	}); err != nil {
		logrus.Warnf("%v", err)
		return false
	}
	return bool(exists)
}

// ListLayers lists the driver's own layers (not those of additional stores),
// children before parents so they can be removed in order.
func (d *Driver) ListLayers() ([]string, error) {
	defer d.keepAlive()
	var out *C.char
	if err := call("list layers", "", func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_list_layers(d.h(), &out, errOut)
	}); err != nil {
		return nil, err
	}
	layers := []string{}
	if err := decodeJSON("list layers", "", takeString(out), &layers); err != nil {
		return nil, err
	}
	return layers, nil
}

// Get mounts the layer (with its parents) and returns the mount point.
func (d *Driver) Get(id string, options graphdriver.MountOpts) (string, error) {
	defer d.keepAlive()
	// options.UidMaps/GidMaps need no action: SupportsShifting is false, so
	// the layer store only passes the mappings the layer's files were already
	// chowned to (it refuses any other mapping before calling Get), exactly as
	// overlay mounts without ID shifting in that case.
	cID := cString(id)
	defer cFree(cID)
	cLabel := cOptString(options.MountLabel)
	defer cFree(cLabel)
	arr := newCStringArray(options.Options)
	defer arr.free()
	var out *C.char
	if err := call("get", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_get(d.h(), cID, cLabel, arr.ptr, arr.len(), &out, errOut)
	}); err != nil {
		return "", err
	}
	return takeString(out), nil
}

// Put releases one reference taken by Get, unmounting on the last one.
func (d *Driver) Put(id string) error {
	defer d.keepAlive()
	cID := cString(id)
	defer cFree(cID)
	return call("put", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_put(d.h(), cID, errOut)
	})
}

// ReadWriteDiskUsage returns the disk usage of the layer's own files.
func (d *Driver) ReadWriteDiskUsage(id string) (*directory.DiskUsage, error) {
	defer d.keepAlive()
	cID := cString(id)
	defer cFree(cID)
	var size, inodes C.int64_t
	if err := call("disk usage", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_read_write_disk_usage(d.h(), cID, &size, &inodes, errOut)
	}); err != nil {
		return nil, err
	}
	return &directory.DiskUsage{Size: int64(size), InodeCount: int64(inodes)}, nil
}

// AdditionalImageStores returns the read-only image store roots the driver was
// configured with (cvmfs.imagestore=).
func (d *Driver) AdditionalImageStores() []string {
	defer d.keepAlive()
	var out *C.char
	if err := call("additional image stores", "", func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_additional_image_stores(d.h(), &out, errOut)
	}); err != nil {
		logrus.Warnf("%v", err)
		return nil
	}
	var stores []string
	if err := decodeJSON("additional image stores", "", takeString(out), &stores); err != nil {
		logrus.Warnf("%v", err)
		return nil
	}
	if len(stores) == 0 {
		return nil
	}
	return stores
}

// layerContentDir is the directory holding the layer's own files (local diff
// directory or the layer's directory inside a repository).
func (d *Driver) layerContentDir(id string) (string, error) {
	defer d.keepAlive()
	cID := cString(id)
	defer cFree(cID)
	var out *C.char
	if err := call("layer content dir", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_layer_content_dir(d.h(), cID, &out, errOut)
	}); err != nil {
		return "", err
	}
	return takeString(out), nil
}

// layerContentDirs lists where the layer's files are found, in order: its
// own directory, then earlier upper directories (after an ID-map update) and
// its parents' directories.
func (d *Driver) layerContentDirs(id string) ([]string, error) {
	defer d.keepAlive()
	cID := cString(id)
	defer cFree(cID)
	var out *C.char
	if err := call("layer content dirs", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_layer_content_dirs(d.h(), cID, &out, errOut)
	}); err != nil {
		return nil, err
	}
	var dirs []string
	if err := decodeJSON("layer content dirs", id, takeString(out), &dirs); err != nil {
		return nil, err
	}
	return dirs, nil
}

// isLocalPath tells whether p is inside the driver home (a local layer), as
// opposed to a repository or a read-only image store.
func (d *Driver) isLocalPath(p string) bool {
	rel, err := filepath.Rel(d.home, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// SupportsShifting reports that the driver cannot shift IDs at mount time;
// containers/storage then creates ID-mapped copies with UpdateLayerIDMap.
func (d *Driver) SupportsShifting(uidmap, gidmap []idtools.IDMap) bool {
	return false
}

// UpdateLayerIDMap rewrites the ownership of a local layer's files from the
// toContainer mapping to the toHost mapping.
func (d *Driver) UpdateLayerIDMap(id string, toContainer, toHost *idtools.IDMappings, mountLabel string) error {
	return d.updateIDMap(id, mappingsJSON(toContainer), mappingsJSON(toHost))
}

func (d *Driver) updateIDMap(id, toContainer, toHost string) error {
	defer d.keepAlive()
	cID := cString(id)
	defer cFree(cID)
	cTo := cOptString(toContainer)
	defer cFree(cTo)
	cHost := cOptString(toHost)
	defer cFree(cHost)
	return call("update ID map", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_update_id_map(d.h(), cID, cTo, cHost, errOut)
	})
}

// Version is the version of the linked Rust core.
func Version() string {
	return C.GoString(C.cvmfs_version())
}

func isLayerUnknown(err error) bool {
	return errors.Is(err, graphdriver.ErrLayerUnknown)
}

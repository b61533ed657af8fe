//go:build linux && cgo

package cvmfs

/*
#include <stdlib.h>
#include <cvmfs_graphdriver.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"

	graphdriver "go.podman.io/storage/drivers"
)

// core is one handle on the Rust core. One method per C ABI function; each
// converts arguments, runs the call and keeps the handle alive until the
// call returns.
type core struct {
	handle *C.cvmfs_driver
}

// newCore opens a driver home. The handle is freed when the core becomes
// garbage: containers/storage has no "close" for drivers and Cleanup must leave
// a driver usable. A core holds no pointer back to the Driver, so it is never
// part of a cycle (finalizers do not run for cycles).
func newCore(home, runRoot string, options []string) (*core, error) {
	cHome := cString(home)
	defer cFree(cHome)
	cRunRoot := cOptString(runRoot)
	defer cFree(cRunRoot)
	opts := newCStringArray(options)
	defer opts.free()
	var handle *C.cvmfs_driver
	err := call("init", "", func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_new(cHome, cRunRoot, opts.ptr, opts.len(), &handle, errOut)
	})
	if err != nil {
		return nil, fmt.Errorf("%w (home %s)", err, home)
	}
	c := &core{handle: handle}
	runtime.SetFinalizer(c, func(c *core) { C.cvmfs_driver_free(c.handle) })
	return c, nil
}

func (c *core) cleanup() error {
	defer runtime.KeepAlive(c)
	return call("cleanup", "", func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_cleanup(c.handle, errOut)
	})
}

// jsonCall runs a call that returns a JSON text and decodes it into v.
func (c *core) jsonCall(op, id string, v any, f func(out **C.char, errOut **C.cvmfs_error) C.cvmfs_result) error {
	defer runtime.KeepAlive(c)
	var out *C.char
	if err := call(op, id, func(errOut **C.cvmfs_error) C.cvmfs_result { return f(&out, errOut) }); err != nil {
		return err
	}
	return decodeJSON(op, id, takeString(out), v)
}

func (c *core) status() ([][2]string, error) {
	var status [][2]string
	err := c.jsonCall("status", "", &status, func(out **C.char, errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_status(c.handle, out, errOut)
	})
	return status, err
}

func (c *core) metadata(id string) (map[string]string, error) {
	cID := cString(id)
	defer cFree(cID)
	var meta map[string]string
	err := c.jsonCall("metadata", id, &meta, func(out **C.char, errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_metadata(c.handle, cID, out, errOut)
	})
	return meta, err
}

func (c *core) create(id, parent string, readWrite bool, storageOpts []string, mappings string) error {
	defer runtime.KeepAlive(c)
	cID := cString(id)
	defer cFree(cID)
	cParent := cOptString(parent)
	defer cFree(cParent)
	arr := newCStringArray(storageOpts)
	defer arr.free()
	cMappings := cOptString(mappings)
	defer cFree(cMappings)
	return call("create", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_create_mapped(c.handle, cID, cParent, C.bool(readWrite), arr.ptr, arr.len(), cMappings, errOut)
	})
}

func (c *core) createFromTemplate(id, template, parent string, readWrite bool) error {
	defer runtime.KeepAlive(c)
	cID := cString(id)
	defer cFree(cID)
	cTemplate := cString(template)
	defer cFree(cTemplate)
	cParent := cOptString(parent)
	defer cFree(cParent)
	return call("create from template", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_create_from_template(c.handle, cID, cTemplate, cParent, C.bool(readWrite), errOut)
	})
}

func (c *core) remove(id string) error {
	defer runtime.KeepAlive(c)
	cID := cString(id)
	defer cFree(cID)
	return call("remove", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_remove(c.handle, cID, errOut)
	})
}

func (c *core) exists(id string) (bool, error) {
	defer runtime.KeepAlive(c)
	cID := cString(id)
	defer cFree(cID)
	var exists C.bool
	err := call("exists", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_exists(c.handle, cID, &exists, errOut)
	})
	return bool(exists), err
}

// provide asks the core to add what key names (what: "image",
// "compressed-digest" or "uncompressed-digest") to its on-demand stores.
func (c *core) provide(what, key string) (bool, error) {
	defer runtime.KeepAlive(c)
	cWhat, cKey := cString(what), cString(key)
	defer cFree(cWhat)
	defer cFree(cKey)
	var added C.bool
	err := call("provide", "", func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_provide(c.handle, cWhat, cKey, &added, errOut)
	})
	return bool(added), err
}

func (c *core) listLayers() ([]string, error) {
	layers := []string{}
	err := c.jsonCall("list layers", "", &layers, func(out **C.char, errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_list_layers(c.handle, out, errOut)
	})
	return layers, err
}

func (c *core) get(id, mountLabel string, options []string) (string, error) {
	defer runtime.KeepAlive(c)
	cID := cString(id)
	defer cFree(cID)
	cLabel := cOptString(mountLabel)
	defer cFree(cLabel)
	arr := newCStringArray(options)
	defer arr.free()
	var out *C.char
	if err := call("get", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_get(c.handle, cID, cLabel, arr.ptr, arr.len(), &out, errOut)
	}); err != nil {
		return "", err
	}
	return takeString(out), nil
}

func (c *core) put(id string) error {
	defer runtime.KeepAlive(c)
	cID := cString(id)
	defer cFree(cID)
	return call("put", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_put(c.handle, cID, errOut)
	})
}

func (c *core) diskUsage(id string) (size, inodes int64, err error) {
	defer runtime.KeepAlive(c)
	cID := cString(id)
	defer cFree(cID)
	var cSize, cInodes C.int64_t
	err = call("disk usage", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_read_write_disk_usage(c.handle, cID, &cSize, &cInodes, errOut)
	})
	return int64(cSize), int64(cInodes), err
}

func (c *core) additionalImageStores() ([]string, error) {
	var stores []string
	err := c.jsonCall("additional image stores", "", &stores, func(out **C.char, errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_additional_image_stores(c.handle, out, errOut)
	})
	return stores, err
}

// layerContentDir is the directory holding the layer's own files (local diff
// directory, or the layer's directory inside a repository or store).
func (c *core) layerContentDir(id string) (string, error) {
	defer runtime.KeepAlive(c)
	cID := cString(id)
	defer cFree(cID)
	var out *C.char
	if err := call("layer content dir", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_layer_content_dir(c.handle, cID, &out, errOut)
	}); err != nil {
		return "", err
	}
	return takeString(out), nil
}

// layerContentDirs lists where the layer's files are found, in order: its
// own directory, then earlier upper directories (after an ID-map update) and
// its parents' directories.
func (c *core) layerContentDirs(id string) ([]string, error) {
	cID := cString(id)
	defer cFree(cID)
	var dirs []string
	err := c.jsonCall("layer content dirs", id, &dirs, func(out **C.char, errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_layer_content_dirs(c.handle, cID, out, errOut)
	})
	return dirs, err
}

func (c *core) updateIDMap(id, toContainer, toHost string) error {
	defer runtime.KeepAlive(c)
	cID := cString(id)
	defer cFree(cID)
	cTo := cOptString(toContainer)
	defer cFree(cTo)
	cHost := cOptString(toHost)
	defer cFree(cHost)
	return call("update ID map", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_update_id_map(c.handle, cID, cTo, cHost, errOut)
	})
}

func (c *core) changes(id, parent string) ([]changeJSON, error) {
	cID := cString(id)
	defer cFree(cID)
	cParent := cOptString(parent)
	defer cFree(cParent)
	var list []changeJSON
	err := c.jsonCall("changes", id, &list, func(out **C.char, errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_changes(c.handle, cID, cParent, out, errOut)
	})
	return list, err
}

type changeJSON struct {
	Path string `json:"path"`
	Kind int    `json:"kind"`
}

func (c *core) diffSize(id, parent string) (int64, error) {
	defer runtime.KeepAlive(c)
	cID := cString(id)
	defer cFree(cID)
	cParent := cOptString(parent)
	defer cFree(cParent)
	var size C.int64_t
	err := call("diff size", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_diff_size(c.handle, cID, cParent, &size, errOut)
	})
	return int64(size), err
}

// diff writes the layer's diff against parent into w (blocking).
func (c *core) diff(id, parent, mappings string, w *os.File) error {
	defer runtime.KeepAlive(c)
	cID := cString(id)
	defer cFree(cID)
	cParent := cOptString(parent)
	defer cFree(cParent)
	cMappings := cOptString(mappings)
	defer cFree(cMappings)
	return call("diff", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_diff(c.handle, cID, cParent, cMappings, C.int(w.Fd()), errOut)
	})
}

// applyDiff streams an uncompressed tar into the core through a pipe: a
// goroutine copies options.Diff into the write end while the core reads the
// read end. Returns the size of the applied layer in bytes.
func (c *core) applyDiff(id string, options graphdriver.ApplyDiffOpts) (int64, error) {
	defer runtime.KeepAlive(c)
	if options.Diff == nil {
		return -1, errorf("apply diff", id, codeInvalidArgument, "no diff stream given")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return -1, fmt.Errorf("cvmfs: apply diff layer %s: creating pipe: %w", id, err)
	}
	copyDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(w, options.Diff)
		// Closing the write end is what tells the core the stream ended.
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		copyDone <- err
	}()

	cID := cString(id)
	defer cFree(cID)
	var opts C.cvmfs_apply_diff_options
	cMappings := cOptString(mappingsJSON(options.Mappings))
	defer cFree(cMappings)
	cLabel := cOptString(options.MountLabel)
	defer cFree(cLabel)
	opts.id_mappings_json = cMappings
	opts.mount_label = cLabel
	opts.ignore_chown_errors = C.bool(options.IgnoreChownErrors)
	if options.ForceMask != nil {
		opts.has_force_mask = true
		opts.force_mask = C.uint32_t(options.ForceMask.Perm())
	}
	var size C.int64_t
	coreErr := call("apply diff", id, func(errOut **C.cvmfs_error) C.cvmfs_result {
		return C.cvmfs_driver_apply_diff(c.handle, cID, C.int(r.Fd()), &opts, &size, errOut)
	})
	if coreErr == nil {
		// The core stops at the tar end-of-archive marker; the caller (the
		// layer store's tar-split recorder) still expects the whole stream to
		// be consumed, so read what follows before closing.
		_, _ = io.Copy(io.Discard, r)
	}
	// Closing the read end unblocks the copier if the core gave up early (its
	// next write fails with EPIPE).
	r.Close()
	copyErr := <-copyDone
	if errors.Is(copyErr, syscall.EPIPE) {
		copyErr = nil // the core stopped reading; its own error says why
	}
	if copyErr != nil {
		// The stream broke: that is the cause, whatever the core made of the
		// truncated tar (it may even have taken it for a complete one).
		if coreErr != nil {
			return -1, fmt.Errorf("cvmfs: apply diff layer %s: reading the diff stream: %w (%v)", id, copyErr, coreErr)
		}
		return -1, fmt.Errorf("cvmfs: apply diff layer %s: reading the diff stream: %w", id, copyErr)
	}
	if coreErr != nil {
		return -1, coreErr
	}
	return int64(size), nil
}

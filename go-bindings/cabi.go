//go:build linux && cgo

package cvmfs

/*
#cgo pkg-config: cvmfs_graphdriver
#include <stdlib.h>
#include <cvmfs_graphdriver.h>
*/
import "C"

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"unsafe"

	graphdriver "go.podman.io/storage/drivers"
	"go.podman.io/storage/pkg/idtools"
)

// Result codes of the C ABI (docs/c-abi.md, "Result codes"): the header's
// constants, which cbindgen generates from the core's one ErrorCode enum, so
// no value is spelled twice. Kept as Go names so errors are classified
// without a cgo call; a code renamed or removed in the core fails this build.
const (
	codeOK              = C.CVMFS_RESULT_OK
	codeInvalidArgument = C.CVMFS_RESULT_INVALID_ARGUMENT
	codeLayerUnknown    = C.CVMFS_RESULT_LAYER_UNKNOWN
	codeLayerExists     = C.CVMFS_RESULT_LAYER_EXISTS
	codeNotSupported    = C.CVMFS_RESULT_NOT_SUPPORTED
	codePrerequisites   = C.CVMFS_RESULT_PREREQUISITES
	codeIO              = C.CVMFS_RESULT_IO
	codeBusy            = C.CVMFS_RESULT_BUSY
	codeRepository      = C.CVMFS_RESULT_REPOSITORY
	codeBadArchive      = C.CVMFS_RESULT_BAD_ARCHIVE
	codeReadOnly        = C.CVMFS_RESULT_READ_ONLY
	codePanic           = C.CVMFS_RESULT_PANIC
)

// knownCodes lists every code above; a test checks it against the codes the
// core names (cvmfs_result_name), so a code added to the core without a Go
// name here fails the bindings' tests.
var knownCodes = []int{
	codeOK, codeInvalidArgument, codeLayerUnknown, codeLayerExists, codeNotSupported,
	codePrerequisites, codeIO, codeBusy, codeRepository, codeBadArchive, codeReadOnly,
	codePanic,
}

// codeName is the core's short name of a result code ("layer unknown"), or
// "" for a value that is no code.
func codeName(code int) string {
	if code < math.MinInt32 || code > math.MaxInt32 {
		return ""
	}
	name := C.cvmfs_result_name(C.int32_t(code))
	if name == nil {
		return ""
	}
	return C.GoString(name)
}

// Error is an error reported by the Rust core. It names the operation and the
// layer; the message from the core names the path and the cause.
type Error struct {
	Op      string // driver operation, e.g. "create"
	Layer   string // layer ID, "" when the operation has none
	Code    int    // C ABI result code
	Message string // message from the core
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("cvmfs: ")
	b.WriteString(e.Op)
	// The core's messages usually name the layer already; do not repeat it.
	if e.Layer != "" && !strings.Contains(e.Message, e.Layer) {
		fmt.Fprintf(&b, " layer %s", e.Layer)
	}
	b.WriteString(": ")
	if e.Message != "" {
		b.WriteString(e.Message)
	} else if name := codeName(e.Code); name != "" {
		b.WriteString(name)
	} else {
		fmt.Fprintf(&b, "error code %d", e.Code)
	}
	return b.String()
}

// Unwrap lets callers use errors.Is with the sentinels containers/storage
// checks for (the mapping table of docs/c-abi.md).
func (e *Error) Unwrap() []error {
	switch e.Code {
	case codeLayerUnknown:
		// Removal paths in the layer store tolerate os.ErrNotExist.
		return []error{graphdriver.ErrLayerUnknown, os.ErrNotExist}
	case codeLayerExists:
		return []error{os.ErrExist}
	case codeNotSupported:
		return []error{graphdriver.ErrNotSupported}
	case codePrerequisites:
		return []error{graphdriver.ErrPrerequisites}
	}
	return nil
}

// call runs one fallible C ABI function, converting its result and error object
// into a Go error. f receives the err_out pointer to pass on.
func call(op, layer string, f func(errOut **C.cvmfs_error) C.cvmfs_result) error {
	var cerr *C.cvmfs_error
	rc := f(&cerr)
	if rc == codeOK {
		if cerr != nil { // not expected by the contract, but never leak it
			C.cvmfs_error_free(cerr)
		}
		return nil
	}
	e := &Error{Op: op, Layer: layer, Code: int(rc)}
	if cerr != nil {
		e.Message = C.GoString(C.cvmfs_error_message(cerr))
		if code := int(C.cvmfs_error_code(cerr)); code != codeOK {
			e.Code = code
		}
		C.cvmfs_error_free(cerr)
	}
	return e
}

// cString is a NUL-terminated copy of s in C memory; optional strings ("")
// become NULL, which the ABI reads as "none". Free with C.free (free(NULL) is
// a no-op).
func cString(s string) *C.char {
	return C.CString(s)
}

func cOptString(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}

func cFree(p *C.char) {
	C.free(unsafe.Pointer(p))
}

// cStringArray is a `const char *const *` array for list arguments.
type cStringArray struct {
	ptr   **C.char
	items []*C.char
}

func newCStringArray(ss []string) *cStringArray {
	n := len(ss)
	// Always allocate at least one slot so the pointer is never NULL, whatever
	// the core thinks of (NULL, 0).
	size := C.size_t(max(n, 1)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))
	ptr := (**C.char)(C.malloc(size))
	items := unsafe.Slice(ptr, max(n, 1))
	items[0] = nil
	for i, s := range ss {
		items[i] = C.CString(s)
	}
	return &cStringArray{ptr: ptr, items: items[:n]}
}

func (a *cStringArray) len() C.size_t { return C.size_t(len(a.items)) }

func (a *cStringArray) free() {
	for _, p := range a.items {
		C.free(unsafe.Pointer(p))
	}
	C.free(unsafe.Pointer(a.ptr))
}

// takeString copies a caller-owned string returned by the core and frees it.
func takeString(p *C.char) string {
	if p == nil {
		return ""
	}
	s := C.GoString(p)
	C.cvmfs_string_free(p)
	return s
}

// decodeJSON decodes a JSON text returned by the core, naming the operation on
// failure (a malformed answer is a bug in the core, not in the caller).
func decodeJSON(op, layer, text string, v any) error {
	if err := json.Unmarshal([]byte(text), v); err != nil {
		return &Error{Op: op, Layer: layer, Code: codeIO, Message: fmt.Sprintf("decoding the core's answer %q: %v", text, err)}
	}
	return nil
}

// idMapJSON is the ID-mapping format of the C ABI.
type idMapJSON struct {
	ContainerID int `json:"container_id"`
	HostID      int `json:"host_id"`
	Size        int `json:"size"`
}

type idMappingsJSON struct {
	UIDs []idMapJSON `json:"uids"`
	GIDs []idMapJSON `json:"gids"`
}

func convertIDMaps(maps []idtools.IDMap) []idMapJSON {
	out := make([]idMapJSON, 0, len(maps))
	for _, m := range maps {
		out = append(out, idMapJSON{ContainerID: m.ContainerID, HostID: m.HostID, Size: m.Size})
	}
	return out
}

// mappingsJSON renders ID mappings for the core; "" (NULL) means identity.
func mappingsJSON(m *idtools.IDMappings) string {
	if m == nil || m.Empty() {
		return ""
	}
	return mapsJSON(m.UIDs(), m.GIDs())
}

func mapsJSON(uids, gids []idtools.IDMap) string {
	if len(uids) == 0 && len(gids) == 0 {
		return ""
	}
	b, err := json.Marshal(idMappingsJSON{UIDs: convertIDMaps(uids), GIDs: convertIDMaps(gids)})
	if err != nil { // cannot happen for these plain structs
		panic(err)
	}
	return string(b)
}

// errorf builds a Go-side error in the same shape as the core's errors.
func errorf(op, layer string, code int, format string, args ...any) error {
	return &Error{Op: op, Layer: layer, Code: code, Message: fmt.Sprintf(format, args...)}
}

// isNotSupported tells whether err is the core's CVMFS_RESULT_NOT_SUPPORTED.
func isNotSupported(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == codeNotSupported
}

//go:build !exclude_graphdriver_cvmfs && linux && cgo

package register

import (
	// register the cvmfs graphdriver (read-only layers from CernVM-FS)
	_ "go.podman.io/storage/drivers/cvmfs"
)

package config

import (
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.podman.io/storage/internal/driver"
)

// A [storage.options.cvmfs] table in storage.conf reaches the drivers as
// cvmfs.<key>=<value> options (storage v1.63: every driver receives every
// table and skips the others'), and the option parser every driver and
// GetMountOptions use knows the cvmfs prefix, so a cvmfs table does not break
// a store that runs another driver.
func TestCvmfsOptionsTable(t *testing.T) {
	var conf struct {
		Options OptionsConfig `toml:"options"`
	}
	_, err := toml.Decode(`
[options.cvmfs]
repositories = "/cvmfs/unpacked.cern.ch,/cvmfs/other.example.org"
mountopt = "nodev"
repository_timeout = "3"
use_flat = "false"
mount_program = "/usr/bin/fuse-overlayfs"
store_views = "false"
owner_images = "false"
ducc_listing = "all"

[options.overlay]
mountopt = "metacopy=on"
`, &conf)
	require.NoError(t, err)

	options := GetGraphDriverOptions(conf.Options)
	assert.Equal(t, []string{
		"overlay.mountopt=metacopy=on",
		"cvmfs.repositories=/cvmfs/unpacked.cern.ch,/cvmfs/other.example.org",
		"cvmfs.mountopt=nodev",
		"cvmfs.repository_timeout=3",
		"cvmfs.use_flat=false",
		"cvmfs.ducc_listing=all",
		"cvmfs.mount_program=/usr/bin/fuse-overlayfs",
		"cvmfs.store_views=false",
		"cvmfs.owner_images=false",
	}, options)
	for _, option := range options {
		_, _, _, err := driver.ParseDriverOption(option)
		assert.NoError(t, err, option)
	}
	name, key, value, err := driver.ParseDriverOption("cvmfs.mountopt=nodev")
	require.NoError(t, err)
	assert.Equal(t, [3]string{"cvmfs", "mountopt", "nodev"}, [3]string{name, key, value})
}

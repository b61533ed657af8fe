package config

import "fmt"

// CvmfsOptionsConfig is the [storage.options.cvmfs] table of storage.conf.
// Options that apply to every driver (mountopt, ignore_chown_errors,
// force_mask in [storage.options]) are already forwarded by the generic code
// (as cvmfs.<key> up to storage 1.62, without a prefix since 1.63); these are
// the driver's own.
type CvmfsOptionsConfig struct {
	// Repositories is a comma-separated list of CVMFS repository roots
	// (e.g. "/cvmfs/unpacked.cern.ch") in which read-only layers are found.
	Repositories string `toml:"repositories,omitempty"`
	// MountOpt specifies extra overlay mount options.
	MountOpt string `toml:"mountopt,omitempty"`
	// IgnoreChownErrors ignores EPERM from chown while applying layers.
	IgnoreChownErrors string `toml:"ignore_chown_errors,omitempty"`
	// ForceMask is an octal permission mask (e.g. "0755"), as for overlay.
	ForceMask string `toml:"force_mask,omitempty"`
	// RepositoryTimeout is how many seconds a repository may take to answer
	// before it is reported unreachable.
	RepositoryTimeout string `toml:"repository_timeout,omitempty"`
	// UseFlat ("true" or "false", default true) lets the driver mount an
	// image's published flat root filesystem instead of stacking its layers.
	UseFlat string `toml:"use_flat,omitempty"`
	// DuccRepositories is a comma-separated list of repositories holding only
	// what DUCC writes; the driver builds a store for each in its home.
	DuccRepositories string `toml:"ducc_repositories,omitempty"`
	// DuccImages limits the DUCC images listed to these names or prefixes
	// ending in "*" (comma-separated).
	DuccImages string `toml:"ducc_images,omitempty"`
	// DuccListing ("on-demand", the default, or "all") lists only the DUCC
	// images used so far, or every one at each publication.
	DuccListing string `toml:"ducc_listing,omitempty"`
	// MountProgram is a FUSE program (fuse-overlayfs) mounting the overlays
	// instead of the kernel, as overlay's mount_program.
	MountProgram string `toml:"mount_program,omitempty"`
	// StoreViews ("true" or "false", default true) lets the driver give
	// podman local copies of the repository image stores (fewer round trips
	// on a cold client); "false" for a long-running podman that must see a
	// new publish without a restart.
	StoreViews string `toml:"store_views,omitempty"`
	// OwnerImages ("true" or "false", default true) lets the driver restore
	// image owners with one metadata-only EROFS image per layer; "false"
	// restores them with metadata-only copies of each entry.
	OwnerImages string `toml:"owner_images,omitempty"`
}

// cvmfsGraphDriverOptions turns the [storage.options.cvmfs] table into
// cvmfs.<key>=<value> driver options.
func cvmfsGraphDriverOptions(options OptionsConfig) []string {
	c := options.Cvmfs
	var doptions []string
	for _, kv := range [][2]string{
		{"repositories", c.Repositories},
		{"mountopt", c.MountOpt},
		{"ignore_chown_errors", c.IgnoreChownErrors},
		{"force_mask", c.ForceMask},
		{"repository_timeout", c.RepositoryTimeout},
		{"use_flat", c.UseFlat},
		{"ducc_repositories", c.DuccRepositories},
		{"ducc_images", c.DuccImages},
		{"ducc_listing", c.DuccListing},
		{"mount_program", c.MountProgram},
		{"store_views", c.StoreViews},
		{"owner_images", c.OwnerImages},
	} {
		if kv[1] != "" {
			doptions = append(doptions, fmt.Sprintf("cvmfs.%s=%s", kv[0], kv[1]))
		}
	}
	return doptions
}

package graphdriver

// ImageProvider is implemented by a driver that lists some images of its
// additional image stores only once they are asked for (the cvmfs driver's
// DUCC stores, cvmfs.ducc_listing=on-demand): the store asks it when a
// lookup finds nothing, and retries the lookup once when it says it added
// something.
//
// A driver that adds to a read-only store it reports in
// AdditionalImageStores writes the new images.json/layers.json first, then
// a new last-write token into the store's images.lock and layers.lock, as
// lockfile.RecordWrite does: that is what makes the store reload them.
type ImageProvider interface {
	// ProvideImage adds what key names: an image by name, ID or unique ID
	// prefix (what == ProvideImageByName), or layers by digest
	// (ProvideLayersByCompressedDigest, ProvideLayersByUncompressedDigest).
	// It returns true when the lookup is worth retrying: the driver's
	// stores list what key names now (added by this call, or by another
	// process since the caller read the store).
	ProvideImage(what, key string) (bool, error)
}

// What an ImageProvider is asked for.
const (
	ProvideImageByName                = "image"
	ProvideLayersByCompressedDigest   = "compressed-digest"
	ProvideLayersByUncompressedDigest = "uncompressed-digest"
)

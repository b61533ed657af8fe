//go:build !containers_image_storage_stub

package storage

import (
	"github.com/sirupsen/logrus"
	"go.podman.io/image/v5/internal/blobinfocache"
	compressiontypes "go.podman.io/image/v5/pkg/compression/types"
	"go.podman.io/storage/pkg/archive"
)

// RecordBlobInfoCacheData implements private.BlobInfoCacheRecorder.
//
// A layer that c/storage created from a compressed blob remembers that blob's
// digest and compression next to the digest of the uncompressed tar. Nothing
// else in the copy pipeline knows them when the image is pushed: the layer may
// have been found already present at pull time (the pull then never recorded
// the compressor), or come from an additional image store without any pull on
// this machine. Without both facts in the cache, the destination cannot offer
// the original compressed blob for reuse and the layer is recompressed, which
// gives it a new digest.
//
// The data is as trustworthy as the store: c/storage computed (or, for a
// read-only additional store, its writer verified) the compressed digest from
// the very stream whose uncompressed digest the layer records, and c/image
// already trusts the same fields when it reuses a stored layer on pull
// (LayersByCompressedDigest).
func (s *storageImageSource) RecordBlobInfoCacheData(cache blobinfocache.BlobInfoCache2) {
	layerID := s.image.TopLayer
	for layerID != "" {
		layer, err := s.imageRef.transport.store.Layer(layerID)
		if err != nil {
			// LayerInfosForCopy has just read the same layers; a failure here only costs reuse.
			logrus.Debugf("Not recording compression of layer %q: %v", layerID, err)
			return
		}
		layerID = layer.Parent
		if layer.CompressedDigest == "" || layer.UncompressedDigest == "" || layer.CompressedDigest == layer.UncompressedDigest {
			continue
		}
		var compressor string
		switch layer.CompressionType {
		case archive.Gzip:
			compressor = compressiontypes.GzipAlgorithmName
		case archive.Zstd:
			compressor = compressiontypes.ZstdAlgorithmName
		default:
			continue
		}
		logrus.Debugf("Layer %q was stored from blob %s (%s), uncompressed %s", layer.ID, layer.CompressedDigest, compressor, layer.UncompressedDigest)
		cache.RecordDigestUncompressedPair(layer.CompressedDigest, layer.UncompressedDigest)
		cache.RecordDigestCompressorData(layer.CompressedDigest, blobinfocache.DigestCompressorData{
			BaseVariantCompressor: compressor,
			// Whether the blob is also a zstd:chunked one is not recorded by c/storage.
			SpecificVariantCompressor:  blobinfocache.UnknownCompression,
			SpecificVariantAnnotations: nil,
		})
	}
}

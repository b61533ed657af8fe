package storage

import (
	"errors"

	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	drivers "go.podman.io/storage/drivers"
)

// provide asks a driver that lists images on demand (drivers.ImageProvider)
// to add what key names; true when it lists it now, so a lookup that
// found nothing is worth retrying once. Called with no store locked.
func (s *store) provide(what, key string) bool {
	if err := s.startUsingGraphDriver(); err != nil {
		return false
	}
	defer s.stopUsingGraphDriver()
	provider, ok := s.graphDriver.(drivers.ImageProvider)
	if !ok {
		return false
	}
	added, err := provider.ProvideImage(what, key)
	if err != nil {
		// a real failure (a miss is false, nil): say it, or the user sees only "image not known"
		logrus.Warnf("asking the %s driver for %s %q: %v", s.graphDriverName, what, key, err)
		return false
	}
	return added
}

// imageProvided is Image, retried once when the driver adds the image.
func (s *store) imageProvided(id string) (*Image, error) {
	image, err := s.image(id)
	if errors.Is(err, ErrImageUnknown) && s.provide(drivers.ProvideImageByName, id) {
		return s.image(id)
	}
	return image, err
}

// layersProvided is layersByMappedDigest, retried once when the driver adds
// layers with digest d.
func (s *store) layersProvided(what string, d digest.Digest, m func(roLayerStore, digest.Digest) ([]Layer, error)) ([]Layer, error) {
	layers, err := s.layersByMappedDigest(m, d)
	if errors.Is(err, ErrLayerUnknown) && s.provide(what, d.String()) {
		return s.layersByMappedDigest(m, d)
	}
	return layers, err
}

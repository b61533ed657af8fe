#!/bin/sh
# The demo image's entrypoint: a stand-in for an analysis job. It reads its
# configuration, the detector geometry and three calibration files out of a
# gigabyte of data, and prints a checksum over them. Nothing else of the image
# is touched, which is the point: with the cvmfs driver only these files are
# fetched from the repository.
echo "analysis: started in the container, $(cat /opt/sim/4.2.1/VERSION)"
. /etc/analysis.conf
n=0
bytes=0
for f in $INPUTS $GEOMETRY; do
  b=$(wc -c <"$f")
  n=$((n + 1))
  bytes=$((bytes + b))
done
sum=$(for f in $INPUTS $GEOMETRY; do sha256sum "$f" | cut -d' ' -f1; done | sha256sum | cut -d' ' -f1)
echo "analysis: result checksum=$sum over $n files ($bytes bytes)"

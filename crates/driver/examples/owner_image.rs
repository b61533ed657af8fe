//! `owner_image LAYER_DIR DATA_PATH OUT`: the owner image the driver would
//! build for the layer directory (no ownership file: every entry 0:0), its
//! regular files redirected to `/DATA_PATH/<path>`. For trying images by hand.
use std::path::Path;

use cvmfs_graphdriver::mount::owner_image;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    assert_eq!(a.len(), 4, "usage: owner_image LAYER_DIR DATA_PATH OUT");
    let img =
        owner_image::layer_image(Path::new(&a[1]), Path::new(&a[2]), Some(&[]), None).unwrap();
    let out = Path::new(&a[3]);
    owner_image::write_image(&img, &out.with_extension("staging"), out).unwrap();
}

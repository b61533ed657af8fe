//! Hostile registries: a small HTTP server on 127.0.0.1 (one thread per
//! connection) serves the registry v2 endpoints for one image and misbehaves
//! as each case programs it — blobs longer or shorter than declared, drip-fed,
//! endless bodies, absurd manifests, hostile token realms and redirects. The
//! publisher (`cvmfs-podman publish docker://127.0.0.1:PORT/hostile/x:1
//! --tls-verify=false`) must fail within a bounded time with an error naming
//! the image, the blob and what was wrong, leave no layer behind, the canary
//! unchanged and the repository consistent (`check --deep`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::*;

pub fn cases() -> Vec<Case> {
    macro_rules! case {
        ($name:literal, $f:ident) => {
            Case {
                name: concat!("network/", $name),
                run: $f,
            }
        };
    }
    vec![
        case!("good-image-publishes", good_image),
        case!("blob-endless-past-declared-size", blob_endless),
        case!("blob-endless-chunked", blob_endless_chunked),
        case!("blob-drip-feed-hits-deadline", blob_drip),
        case!("blob-shorter-than-declared", blob_short),
        case!("blob-wrong-digest", blob_wrong_digest),
        case!("blob-content-length-lies", blob_content_length),
        case!("config-endless", config_endless),
        case!("manifest-endless-by-tag", manifest_endless),
        case!("manifest-drip-feed-hits-deadline", manifest_drip),
        case!("manifest-descriptor-without-digest", desc_no_digest),
        case!("manifest-descriptor-negative-size", desc_negative_size),
        case!("manifest-descriptor-absurd-size", desc_absurd_size),
        case!("manifest-descriptor-digest-not-sha256", desc_bad_digest),
        case!("manifest-descriptor-unknown-media-type", desc_media_type),
        case!("manifest-too-many-layers", too_many_layers),
        case!("manifest-schema1", manifest_schema1),
        case!("index-points-to-itself", index_self),
        case!("index-nested-deep", index_deep),
        case!("index-entry-size-lies", index_size_lies),
        case!("token-realm-file-scheme", token_realm_file),
        case!("token-endless", token_endless),
        case!("token-drip-feed-hits-deadline", token_drip),
        case!("redirect-to-file-scheme", redirect_file),
        case!("redirect-loop", redirect_loop),
        case!("redirect-other-port-endless", redirect_other_port),
        case!("redirect-body-endless-not-read", redirect_body_endless),
        case!("error-body-endless-not-read", error_body_endless),
        case!("response-headers-endless", headers_endless),
        case!("response-headers-drip-feed-hits-deadline", headers_drip),
        case!("oci-blob-is-dev-zero", oci_dev_zero),
        case!("oci-blob-longer-than-declared", oci_blob_longer),
        case!("oci-manifest-size-lies", oci_manifest_size),
    ]
}

// ---------------------------------------------------------------------------
// The image the server serves when a case does not program otherwise.

const REPO: &str = "hostile/x";
const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn digest(b: &[u8]) -> String {
    let h = Sha256::digest(b);
    format!(
        "sha256:{}",
        h.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[derive(Clone)]
struct Img {
    layer: Vec<u8>,
    layer_digest: String,
    config: Vec<u8>,
    config_digest: String,
    manifest: Vec<u8>,
}

impl Img {
    fn new() -> Img {
        let layer = RawTar::new()
            .dir("etc")
            .file("etc/hello", b"hello from a hostile registry\n")
            .end();
        let layer_digest = digest(&layer);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": host_arch(), "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }))
        .unwrap();
        let config_digest = digest(&config);
        let mut img = Img {
            layer,
            layer_digest,
            config,
            config_digest,
            manifest: Vec::new(),
        };
        let layer_desc = img.layer_desc();
        img.manifest = img.manifest_with(vec![layer_desc]);
        img
    }
    fn layer_desc(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": MT_LAYER, "digest": self.layer_digest, "size": self.layer.len()})
    }
    fn manifest_with(&self, layers: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": self.config_digest, "size": self.config.len()},
            "layers": layers,
        }))
        .unwrap()
    }
    fn blob_path(&self, d: &str) -> String {
        format!("/v2/{REPO}/blobs/{d}")
    }
    fn tag_path(&self) -> String {
        format!("/v2/{REPO}/manifests/1")
    }
    /// What a well-behaved registry answers.
    fn good(&self, path: &str) -> Reply {
        if path == "/v2/" {
            return Reply::ok("application/json", b"{}".to_vec());
        }
        if path == self.tag_path()
            || path == format!("/v2/{REPO}/manifests/{}", digest(&self.manifest))
        {
            return Reply::ok(MT_MANIFEST, self.manifest.clone());
        }
        if path == self.blob_path(&self.config_digest) {
            return Reply::ok("application/octet-stream", self.config.clone());
        }
        if path == self.blob_path(&self.layer_digest) {
            return Reply::ok("application/octet-stream", self.layer.clone());
        }
        Reply::status(404, "", b"{\"errors\":[{\"code\":\"NOT_FOUND\"}]}".to_vec())
    }
}

// ---------------------------------------------------------------------------
// The hostile server.

/// One programmed answer.
enum Reply {
    /// Status, extra header lines (each ending `\r\n`), body with Content-Length.
    Full(u16, String, Vec<u8>),
    /// 200 whose body ends when the connection closes (no Content-Length).
    CloseDelimited(Vec<u8>),
    /// Status and headers, `prefix`, then zeros until the client gives up.
    Endless {
        status: u16,
        headers: String,
        prefix: Vec<u8>,
        chunked: bool,
    },
    /// 200 with Content-Length, the body one byte every `every`.
    Drip(Vec<u8>, Duration),
    /// Bytes exactly as given, one every `every` (status line and headers too).
    DripRaw(Vec<u8>, Duration),
    /// Bytes exactly as given, then close.
    Raw(Vec<u8>),
}

impl Reply {
    fn ok(ctype: &str, body: Vec<u8>) -> Reply {
        Reply::Full(200, format!("Content-Type: {ctype}\r\n"), body)
    }
    fn status(code: u16, headers: &str, body: Vec<u8>) -> Reply {
        Reply::Full(code, headers.to_string(), body)
    }
    fn endless(prefix: Vec<u8>) -> Reply {
        Reply::Endless {
            status: 200,
            headers: String::new(),
            prefix,
            chunked: false,
        }
    }
}

type Route = dyn Fn(&str, u16) -> Reply + Send + Sync;

/// A server on 127.0.0.1:0, stopped (and its accept thread joined) on drop.
struct Hostile {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Body bytes written, over all connections.
    sent: Arc<AtomicU64>,
    /// Paths requested, in order.
    hits: Arc<Mutex<Vec<String>>>,
    accept: Option<JoinHandle<()>>,
}

impl Hostile {
    /// `route(path, own_port)` answers every request.
    fn start(route: impl Fn(&str, u16) -> Reply + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let route: Arc<Route> = Arc::new(route);
        let (st, se, hi) = (stop.clone(), sent.clone(), hits.clone());
        let accept = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let (st, se, hi, route) =
                            (st.clone(), se.clone(), hi.clone(), route.clone());
                        conns.push(std::thread::spawn(move || {
                            serve(c, port, &*route, &st, &se, &hi)
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Hostile {
            port,
            stop,
            sent,
            hits,
            accept: Some(accept),
        }
    }
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(
    mut c: TcpStream,
    port: u16,
    route: &Route,
    stop: &AtomicBool,
    sent: &AtomicU64,
    hits: &Mutex<Vec<String>>,
) {
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut req = Vec::new();
    let mut b = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&b[..n]),
        }
        // a TLS ClientHello (the publisher tries https first): not spoken here
        if req.first() == Some(&0x16) || req.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&req);
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    hits.lock().unwrap().push(path.clone());
    let reason = |code: u16| match code {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Whatever",
    };
    let put = |c: &mut TcpStream, data: &[u8]| -> bool {
        // a write that times out is retried until the client is gone or the case ends
        let mut off = 0;
        while off < data.len() {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            match c.write(&data[off..]) {
                Ok(0) => return false,
                Ok(n) => {
                    off += n;
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return false,
            }
        }
        true
    };
    match route(&path, port) {
        Reply::Full(code, headers, body) => {
            let head = format!(
                "HTTP/1.1 {code} {}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                reason(code),
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            put(&mut c, &body);
        }
        Reply::CloseDelimited(body) => {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            put(&mut c, &body);
        }
        Reply::Endless {
            status,
            headers,
            prefix,
            chunked,
        } => {
            let te = if chunked {
                "Transfer-Encoding: chunked\r\n"
            } else {
                ""
            };
            let head = format!(
                "HTTP/1.1 {status} {}\r\n{headers}{te}Connection: close\r\n\r\n",
                reason(status)
            );
            let _ = c.write_all(head.as_bytes());
            let frame = |d: &[u8]| -> Vec<u8> {
                if chunked {
                    [format!("{:x}\r\n", d.len()).as_bytes(), d, b"\r\n"].concat()
                } else {
                    d.to_vec()
                }
            };
            if !prefix.is_empty() && !put(&mut c, &frame(&prefix)) {
                return;
            }
            let zeros = frame(&[0u8; 65536]);
            while put(&mut c, &zeros) {}
        }
        Reply::Drip(body, every) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            drip(&mut c, &body, every, stop, &put);
        }
        Reply::Raw(bytes) => {
            put(&mut c, &bytes);
        }
        Reply::DripRaw(bytes, every) => drip(&mut c, &bytes, every, stop, &put),
    }
}

/// Write `bytes` one every `every` until done, the client leaves or the case ends.
fn drip(
    c: &mut TcpStream,
    bytes: &[u8],
    every: Duration,
    stop: &AtomicBool,
    put: &dyn Fn(&mut TcpStream, &[u8]) -> bool,
) {
    for byte in bytes {
        let until = Instant::now() + every;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !put(c, &[*byte]) {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Running the publisher against a server.

struct Published {
    run: Run,
    took: Duration,
    image: String,
}

/// Publish `docker://127.0.0.1:<port>/hostile/x:1` into the scene's repository.
fn publish_from(s: &Scene, port: u16, extra: &[&str]) -> Published {
    let image = format!("docker://127.0.0.1:{port}/{REPO}:1");
    let mut args = vec![
        "publish",
        &image,
        "--tls-verify=false",
        "--repo",
        s.repo.to_str().unwrap(),
        "--name",
        "example.org/hostile/x:1",
        "-q",
    ];
    if !extra.contains(&"--transfer-timeout") {
        // every case ends well before this unless something hangs
        args.extend_from_slice(&["--transfer-timeout", "20s"]);
    }
    args.extend_from_slice(extra);
    let started = Instant::now();
    let run = cvmfs_podman(&args);
    // HOSTILE_VERBOSE=1: show what the publisher said
    if std::env::var_os("HOSTILE_VERBOSE").is_some() {
        eprintln!("    {}", run.stderr.trim());
    }
    Published {
        run,
        took: started.elapsed(),
        image,
    }
}

/// Nothing of a layer left in the repository: `.layers` holds only its
/// catalog marker and no tar-split was kept.
fn no_layer_left(s: &Scene) -> Result<(), String> {
    let names = |d: &str| -> Vec<String> {
        std::fs::read_dir(s.repo.join(d))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let layers: Vec<String> = names(".layers")
        .into_iter()
        .filter(|n| n != ".cvmfscatalog")
        .collect();
    ensure(layers.is_empty(), format!(".layers holds {layers:?}"))?;
    let ts = names("podmanStore/cvmfs/tar-split");
    ensure(ts.is_empty(), format!("tar-split holds {ts:?}"))
}

/// The assertions of a refused publish: failed within `limit`, error names
/// the image and every string of `names`, no layer left, canary unchanged,
/// repository consistent.
fn refused(s: &Scene, p: &Published, limit: Duration, names: &[&str]) -> Result<(), String> {
    ensure(
        p.took < limit,
        format!("took {:.1}s, more than {limit:?}", p.took.as_secs_f64()),
    )?;
    let mut all = vec![p.image.as_str()];
    all.extend_from_slice(names);
    s.refused(&p.run, &all)?;
    no_layer_left(s)
}

/// A server serving the good image except where `over(img, path, port)`
/// answers; the case then checks the publish against `names`.
fn hostile_case(
    name: &str,
    over: impl Fn(&Img, &str, u16) -> Option<Reply> + Send + Sync + 'static,
    extra: &[&str],
    limit: Duration,
    names: impl Fn(&Img) -> Vec<String>,
) -> Result<(Hostile, Published), String> {
    let img = Img::new();
    let want = names(&img);
    let served = img.clone();
    let server = Hostile::start(move |path, port| {
        over(&served, path, port).unwrap_or_else(|| served.good(path))
    });
    let s = Scene::new(name);
    let p = publish_from(&s, server.port, extra);
    let w: Vec<&str> = want.iter().map(String::as_str).collect();
    refused(&s, &p, limit, &w).map_err(|e| format!("{e} (requests: {:?})", server.hits()))?;
    Ok((server, p))
}

const QUICK: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// The cases.

/// The control: the server's image is sound and publishes, so the other
/// cases fail for what they change.
fn good_image() -> Outcome {
    let img = Img::new();
    let served = img.clone();
    let server = Hostile::start(move |path, _| served.good(path));
    let s = Scene::new("net-good");
    let p = publish_from(&s, server.port, &[]);
    outcome((|| {
        ensure(p.run.ok, format!("publish failed: {}", p.run.stderr))?;
        s.canary.unchanged()?;
        s.check_deep()?;
        let hex = img.layer_digest.trim_start_matches("sha256:");
        let hello = s
            .repo
            .join(format!(".layers/{}/{hex}/layerfs/etc/hello", &hex[..2]));
        ensure(hello.is_file(), format!("{} missing", hello.display()))
    })())
}

fn blob_endless() -> Outcome {
    outcome((|| {
        let (server, _) = hostile_case(
            "net-endless",
            |img, path, _| {
                (path == img.blob_path(&img.layer_digest))
                    .then(|| Reply::endless(img.layer.clone()))
            },
            &[],
            QUICK,
            |img| {
                vec![
                    img.layer_digest.clone(),
                    format!("longer than the declared {} bytes", img.layer.len()),
                ]
            },
        )?;
        // what sat in socket buffers when the publisher hung up, not gigabytes
        let sent = server.sent();
        ensure(
            sent < 16 << 20,
            format!("the server sent {sent} bytes for a blob of a few KiB"),
        )
    })())
}

fn blob_endless_chunked() -> Outcome {
    outcome(
        hostile_case(
            "net-endless-chunked",
            |img, path, _| {
                (path == img.blob_path(&img.layer_digest)).then(|| Reply::Endless {
                    status: 200,
                    headers: String::new(),
                    prefix: img.layer.clone(),
                    chunked: true,
                })
            },
            &[],
            QUICK,
            |img| vec![img.layer_digest.clone(), "longer than the declared".into()],
        )
        .map(|_| ()),
    )
}

fn blob_drip() -> Outcome {
    outcome((|| {
        let (_, p) = hostile_case(
            "net-drip",
            |img, path, _| {
                (path == img.blob_path(&img.layer_digest))
                    .then(|| Reply::Drip(img.layer.clone(), Duration::from_millis(500)))
            },
            // deadline 3 s + a few KiB at 1 MiB/s
            &["--transfer-timeout", "3s", "--transfer-min-rate", "1M"],
            QUICK,
            |img| vec![img.layer_digest.clone(), "transfer deadline of 3.0s".into()],
        )?;
        ensure(
            p.took >= Duration::from_millis(2900),
            format!("failed after {:?}, before the deadline", p.took),
        )
    })())
}

fn blob_short() -> Outcome {
    outcome(
        hostile_case(
            "net-short",
            |img, path, _| {
                (path == img.blob_path(&img.layer_digest))
                    .then(|| Reply::CloseDelimited(img.layer[..1024].to_vec()))
            },
            &[],
            QUICK,
            |img| {
                vec![
                    img.layer_digest.clone(),
                    format!("shorter than the declared {} bytes", img.layer.len()),
                ]
            },
        )
        .map(|_| ()),
    )
}

fn blob_wrong_digest() -> Outcome {
    outcome(
        hostile_case(
            "net-digest",
            |img, path, _| {
                (path == img.blob_path(&img.layer_digest)).then(|| {
                    let mut l = img.layer.clone();
                    l[600] ^= 1;
                    Reply::ok("application/octet-stream", l)
                })
            },
            &[],
            QUICK,
            |img| vec![img.layer_digest.clone(), "digest mismatch".into()],
        )
        .map(|_| ()),
    )
}

fn blob_content_length() -> Outcome {
    outcome(
        hostile_case(
            "net-clen",
            |img, path, _| {
                (path == img.blob_path(&img.layer_digest)).then(|| {
                    let mut head =
                        b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n".to_vec();
                    head.extend_from_slice(&img.layer);
                    Reply::Raw(head)
                })
            },
            &[],
            QUICK,
            |img| {
                vec![
                    img.layer_digest.clone(),
                    "announces 1000000000000 bytes".into(),
                ]
            },
        )
        .map(|_| ()),
    )
}

fn config_endless() -> Outcome {
    outcome(
        hostile_case(
            "net-config",
            |img, path, _| {
                (path == img.blob_path(&img.config_digest))
                    .then(|| Reply::endless(img.config.clone()))
            },
            &[],
            QUICK,
            |img| {
                vec![
                    "config".into(),
                    img.config_digest.clone(),
                    "longer than the declared".into(),
                ]
            },
        )
        .map(|_| ()),
    )
}

fn manifest_endless() -> Outcome {
    outcome(
        hostile_case(
            "net-manifest-endless",
            |img, path, _| (path == img.tag_path()).then(|| Reply::endless(img.manifest.clone())),
            &[],
            QUICK,
            |_| vec!["manifest 1".into(), "larger than 4194304 bytes".into()],
        )
        .map(|_| ()),
    )
}

fn manifest_drip() -> Outcome {
    outcome(
        hostile_case(
            "net-manifest-drip",
            |img, path, _| {
                (path == img.tag_path())
                    .then(|| Reply::Drip(img.manifest.clone(), Duration::from_millis(500)))
            },
            // 3 s + 4 MiB at 4 MiB/s
            &["--transfer-timeout", "3s", "--transfer-min-rate", "4M"],
            QUICK,
            |_| vec!["manifest 1".into(), "transfer deadline of 4.0s".into()],
        )
        .map(|_| ()),
    )
}

/// A manifest whose only layer descriptor is `desc`.
fn bad_descriptor(
    name: &'static str,
    desc: fn(&Img) -> serde_json::Value,
    want: &'static [&'static str],
) -> Outcome {
    outcome(
        hostile_case(
            name,
            move |img, path, _| {
                (path == img.tag_path())
                    .then(|| Reply::ok(MT_MANIFEST, img.manifest_with(vec![desc(img)])))
            },
            &[],
            QUICK,
            |_| want.iter().map(|s| s.to_string()).collect(),
        )
        .map(|_| ()),
    )
}

fn desc_no_digest() -> Outcome {
    bad_descriptor(
        "net-nodigest",
        |img| serde_json::json!({"mediaType": MT_LAYER, "size": img.layer.len()}),
        &["layer 1", "without \"digest\""],
    )
}

fn desc_negative_size() -> Outcome {
    bad_descriptor(
        "net-negsize",
        |img| serde_json::json!({"mediaType": MT_LAYER, "digest": img.layer_digest, "size": -1}),
        &["layer 1", "size -1 is not a non-negative integer"],
    )
}

fn desc_absurd_size() -> Outcome {
    bad_descriptor(
        "net-hugesize",
        |img| serde_json::json!({"mediaType": MT_LAYER, "digest": img.layer_digest, "size": 1u64 << 60}),
        &["layer 1", "absurd"],
    )
}

fn desc_bad_digest() -> Outcome {
    bad_descriptor(
        "net-baddigest",
        |img| serde_json::json!({"mediaType": MT_LAYER, "digest": "sha256:../../../../etc/passwd", "size": img.layer.len()}),
        &[
            "layer 1",
            "sha256:../../../../etc/passwd",
            "is not sha256:<64",
        ],
    )
}

fn desc_media_type() -> Outcome {
    bad_descriptor(
        "net-mediatype",
        |img| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+encrypted", "digest": img.layer_digest, "size": img.layer.len()}),
        &["layer 1", "tar+encrypted", "not one we handle"],
    )
}

fn too_many_layers() -> Outcome {
    outcome(
        hostile_case(
            "net-manylayers",
            |img, path, _| {
                (path == img.tag_path()).then(|| {
                    Reply::ok(
                        MT_MANIFEST,
                        img.manifest_with(vec![img.layer_desc(); 100_000]),
                    )
                })
            },
            &[],
            QUICK,
            // 100 000 descriptors are more than the 4 MiB manifest cap
            |_| vec!["manifest 1".into(), "more than the limit of 4194304".into()],
        )
        .and_then(|_| {
            hostile_case(
                "net-manylayers2",
                |img, path, _| {
                    (path == img.tag_path()).then(|| {
                        Reply::ok(MT_MANIFEST, img.manifest_with(vec![img.layer_desc(); 501]))
                    })
                },
                &[],
                QUICK,
                |_| vec!["501 layers, more than 500".into()],
            )
        })
        .map(|_| ()),
    )
}

fn manifest_schema1() -> Outcome {
    outcome(
        hostile_case(
            "net-schema1",
            |img, path, _| {
                (path == img.tag_path()).then(|| {
                    Reply::ok(
                        "application/vnd.docker.distribution.manifest.v1+prettyjws",
                        br#"{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:x"}]}"#.to_vec(),
                    )
                })
            },
            &[],
            QUICK,
            |_| vec!["schemaVersion 1".into()],
        )
        .map(|_| ()),
    )
}

fn index_of(entries: Vec<(String, usize, &str)>) -> Vec<u8> {
    let list: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|(d, size, mt)| {
            serde_json::json!({"mediaType": mt, "digest": d, "size": size,
                "platform": {"os": "linux", "architecture": host_arch()}})
        })
        .collect();
    serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": list}),
    )
    .unwrap()
}

/// The tag serves an index whose entry names a digest that serves the same
/// index again. (A document cannot contain its own sha256, so the digest check
/// refuses it first; `source::resolve_manifest` also refuses loops, see its
/// unit test.)
fn index_self() -> Outcome {
    outcome((|| {
        let d = format!("sha256:{}", "ab".repeat(32));
        let mut size = 0;
        let idx = loop {
            let idx = index_of(vec![(d.clone(), size, MT_INDEX)]);
            if idx.len() == size {
                break idx;
            }
            size = idx.len();
        };
        let dd = d.clone();
        hostile_case(
            "net-indexself",
            move |_, path, _| {
                (path == format!("/v2/{REPO}/manifests/1")
                    || path == format!("/v2/{REPO}/manifests/{dd}"))
                .then(|| Reply::ok(MT_INDEX, idx.clone()))
            },
            &[],
            QUICK,
            move |_| vec![d.clone(), "digest mismatch".into()],
        )
        .map(|_| ())
    })())
}

/// A chain of distinct indexes, each naming the next.
fn index_deep() -> Outcome {
    outcome((|| {
        // built from the bottom: index k names index k+1 (by its real digest)
        let img = Img::new();
        let mut docs: Vec<Vec<u8>> = vec![img.manifest.clone()];
        for _ in 0..6 {
            let below = docs.last().unwrap();
            let mt = if docs.len() == 1 {
                MT_MANIFEST
            } else {
                MT_INDEX
            };
            docs.push(index_of(vec![(digest(below), below.len(), mt)]));
        }
        let top = docs.last().unwrap().clone();
        let by_digest: Vec<(String, Vec<u8>)> =
            docs.iter().map(|d| (digest(d), d.clone())).collect();
        hostile_case(
            "net-indexdeep",
            move |_, path, _| {
                if path == format!("/v2/{REPO}/manifests/1") {
                    return Some(Reply::ok(MT_INDEX, top.clone()));
                }
                by_digest
                    .iter()
                    .find(|(d, _)| path == format!("/v2/{REPO}/manifests/{d}"))
                    .map(|(_, b)| {
                        let mt = if b.windows(9).any(|w| w == b"\"layers\":") {
                            MT_MANIFEST
                        } else {
                            MT_INDEX
                        };
                        Reply::ok(mt, b.clone())
                    })
            },
            &[],
            QUICK,
            |_| vec!["nested deeper than".into()],
        )
        .map(|_| ())
    })())
}

/// The index declares the manifest's size; the registry serves more.
fn index_size_lies() -> Outcome {
    outcome((|| {
        let img = Img::new();
        let md = digest(&img.manifest);
        let idx = index_of(vec![(md.clone(), img.manifest.len() - 10, MT_MANIFEST)]);
        let want = md.clone();
        hostile_case(
            "net-indexsize",
            move |img, path, _| {
                if path == img.tag_path() {
                    return Some(Reply::ok(MT_INDEX, idx.clone()));
                }
                (path == format!("/v2/{REPO}/manifests/{md}"))
                    .then(|| Reply::endless(img.manifest.clone()))
            },
            &[],
            QUICK,
            move |img| {
                vec![
                    want.clone(),
                    format!("larger than {} bytes", img.manifest.len() - 10),
                ]
            },
        )
        .map(|_| ())
    })())
}

/// Every request but `/token` needs a token first.
fn with_challenge(img: &Img, path: &str, realm: &str) -> Option<Reply> {
    let _ = img;
    (path != "/token" && !path.starts_with("/token?")).then(|| {
        Reply::status(
            401,
            &format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"x\"\r\n"),
            b"{}".to_vec(),
        )
    })
}

fn token_realm_file() -> Outcome {
    outcome(
        hostile_case(
            "net-realmfile",
            |img, path, _| with_challenge(img, path, "file:///etc/shadow"),
            &[],
            QUICK,
            |_| {
                vec![
                    "token realm \"file:///etc/shadow\"".into(),
                    "not an http(s) URL".into(),
                ]
            },
        )
        .map(|_| ()),
    )
}

fn token_endless() -> Outcome {
    outcome(
        hostile_case(
            "net-tokenendless",
            |img, path, port| {
                if path.starts_with("/token") {
                    return Some(Reply::endless(b"{\"token\":\"".to_vec()));
                }
                with_challenge(img, path, &format!("http://127.0.0.1:{port}/token"))
            },
            &[],
            QUICK,
            |_| {
                vec![
                    "token from http://127.0.0.1".into(),
                    "larger than 1048576 bytes".into(),
                ]
            },
        )
        .map(|_| ()),
    )
}

fn token_drip() -> Outcome {
    outcome(
        hostile_case(
            "net-tokendrip",
            |img, path, port| {
                if path.starts_with("/token") {
                    return Some(Reply::Drip(
                        b"{\"token\":\"abc\"}".to_vec(),
                        Duration::from_millis(700),
                    ));
                }
                with_challenge(img, path, &format!("http://127.0.0.1:{port}/token"))
            },
            // 3 s + 1 MiB at 1 MiB/s
            &["--transfer-timeout", "3s", "--transfer-min-rate", "1M"],
            QUICK,
            |_| vec!["token from".into(), "transfer deadline of 4.0s".into()],
        )
        .map(|_| ()),
    )
}

fn redirect(to: &str) -> Reply {
    Reply::status(307, &format!("Location: {to}\r\n"), Vec::new())
}

fn redirect_file() -> Outcome {
    outcome(
        hostile_case(
            "net-redirfile",
            |img, path, _| {
                (path == img.blob_path(&img.layer_digest)).then(|| redirect("file:///dev/zero"))
            },
            &[],
            QUICK,
            |img| vec![img.layer_digest.clone(), "only http(s) URLs".into()],
        )
        .map(|_| ()),
    )
}

fn redirect_loop() -> Outcome {
    outcome(
        hostile_case(
            "net-redirloop",
            |img, path, _| {
                let p = img.blob_path(&img.layer_digest);
                (path == p).then(|| redirect(&p))
            },
            &[],
            QUICK,
            |img| vec![img.layer_digest.clone(), "more than 5 redirects".into()],
        )
        .map(|_| ()),
    )
}

/// The blob redirects to another server (another port) that sends forever.
fn redirect_other_port() -> Outcome {
    outcome((|| {
        let img = Img::new();
        let layer = img.layer.clone();
        let cdn = Hostile::start(move |_, _| Reply::endless(layer.clone()));
        let cdn_port = cdn.port;
        hostile_case(
            "net-redircdn",
            move |img, path, _| {
                (path == img.blob_path(&img.layer_digest))
                    .then(|| redirect(&format!("http://127.0.0.1:{cdn_port}/cdn/blob")))
            },
            &[],
            QUICK,
            |img| vec![img.layer_digest.clone(), "longer than the declared".into()],
        )?;
        ensure(
            cdn.hits() == ["/cdn/blob"],
            format!("the CDN saw {:?}", cdn.hits()),
        )?;
        ensure(
            cdn.sent() < 16 << 20,
            format!("the CDN sent {} bytes", cdn.sent()),
        )
    })())
}

/// A redirect whose body never ends: its body is not read, the redirect is
/// followed and the image publishes.
fn redirect_body_endless() -> Outcome {
    let img = Img::new();
    let served = img.clone();
    let server = Hostile::start(move |path, _| {
        if path == served.blob_path(&served.layer_digest) {
            return Reply::Endless {
                status: 307,
                headers: "Location: /real-blob\r\n".into(),
                prefix: Vec::new(),
                chunked: false,
            };
        }
        if path == "/real-blob" {
            return Reply::ok("application/octet-stream", served.layer.clone());
        }
        served.good(path)
    });
    let s = Scene::new("net-redirbody");
    let p = publish_from(&s, server.port, &[]);
    outcome((|| {
        ensure(p.run.ok, format!("publish failed: {}", p.run.stderr))?;
        ensure(p.took < QUICK, format!("took {:?}", p.took))?;
        ensure(
            server.sent() < 16 << 20,
            format!("the redirect body was read: {} bytes sent", server.sent()),
        )?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

fn error_body_endless() -> Outcome {
    outcome((|| {
        let (server, _) = hostile_case(
            "net-errbody",
            |img, path, _| {
                (path == img.blob_path(&img.layer_digest)).then(|| Reply::Endless {
                    status: 404,
                    headers: String::new(),
                    prefix: b"{\"errors\":[".to_vec(),
                    chunked: true,
                })
            },
            &[],
            QUICK,
            |img| vec![img.layer_digest.clone(), "HTTP 404".into()],
        )?;
        ensure(
            server.sent() < 16 << 20,
            format!("the error body was read: {} bytes", server.sent()),
        )
    })())
}

fn headers_endless() -> Outcome {
    outcome(
        hostile_case(
            "net-headers",
            |img, path, _| {
                (path == img.blob_path(&img.layer_digest)).then(|| {
                    let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
                    for i in 0..100_000 {
                        r.extend_from_slice(
                            format!("X-Junk-{i}: {}\r\n", "y".repeat(40)).as_bytes(),
                        );
                    }
                    Reply::Raw(r)
                })
            },
            &[],
            QUICK,
            |img| vec![img.layer_digest.clone(), "header".into()],
        )
        .map(|_| ()),
    )
}

/// The status line and headers arrive one byte every 300 ms.
fn headers_drip() -> Outcome {
    outcome(
        hostile_case(
            "net-headerdrip",
            |img, path, _| {
                (path == img.blob_path(&img.layer_digest)).then(|| {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                        img.layer.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&img.layer);
                    Reply::DripRaw(r, Duration::from_millis(300))
                })
            },
            &["--transfer-timeout", "3s", "--transfer-min-rate", "1M"],
            QUICK,
            |img| {
                vec![
                    img.layer_digest.clone(),
                    "not answered within the transfer deadline of 3.0s".into(),
                ]
            },
        )
        .map(|_| ()),
    )
}

// ---------------------------------------------------------------------------
// The same bounds for an `oci:` layout on disk.

/// A scene with an OCI layout `oci/` (tag `t`, one uncompressed layer) and
/// the layer's digest.
fn oci_scene(name: &str) -> (Scene, std::path::PathBuf, String) {
    let s = Scene::new(name);
    let tar = Img::new().layer;
    let tar_path = s.dir.path().join("layer.tar");
    std::fs::write(&tar_path, &tar).unwrap();
    let oci = s.dir.path().join("oci");
    let made = cvmfs_podman(&[
        "make-oci",
        oci.to_str().unwrap(),
        "--tag",
        "t",
        "--compression",
        "none",
        tar_path.to_str().unwrap(),
    ]);
    assert!(made.ok, "make-oci: {}", made.stderr);
    (s, oci, digest(&tar))
}

fn oci_publish(s: &Scene, oci: &std::path::Path) -> Published {
    let image = format!("oci:{}:t", oci.display());
    let started = Instant::now();
    let run = cvmfs_podman(&[
        "publish",
        &image,
        "--repo",
        s.repo.to_str().unwrap(),
        "--name",
        "example.org/hostile/x:1",
        "-q",
    ]);
    if std::env::var_os("HOSTILE_VERBOSE").is_some() {
        eprintln!("    {}", run.stderr.trim());
    }
    Published {
        run,
        took: started.elapsed(),
        image,
    }
}

fn blob_file(oci: &std::path::Path, d: &str) -> std::path::PathBuf {
    oci.join("blobs/sha256")
        .join(d.trim_start_matches("sha256:"))
}

/// A layer blob that is a symlink to `/dev/zero`: endless, refused unread.
fn oci_dev_zero() -> Outcome {
    let (s, oci, layer) = oci_scene("net-ocizero");
    let f = blob_file(&oci, &layer);
    std::fs::remove_file(&f).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &f).unwrap();
    let p = oci_publish(&s, &oci);
    outcome(refused(&s, &p, QUICK, &[&layer, "is not a regular file"]))
}

/// A layer blob file with a MiB appended.
fn oci_blob_longer() -> Outcome {
    let (s, oci, layer) = oci_scene("net-ocilong");
    let f = blob_file(&oci, &layer);
    let mut b = std::fs::read(&f).unwrap();
    b.extend(std::iter::repeat_n(0u8, 1 << 20));
    std::fs::write(&f, b).unwrap();
    let p = oci_publish(&s, &oci);
    outcome(refused(
        &s,
        &p,
        QUICK,
        &[&layer, "longer than the declared"],
    ))
}

/// index.json declares the manifest one byte shorter than it is.
fn oci_manifest_size() -> Outcome {
    let (s, oci, _) = oci_scene("net-ocimsize");
    let ip = oci.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ip).unwrap()).unwrap();
    let entry = &mut index["manifests"][0];
    let size = entry["size"].as_u64().unwrap();
    entry["size"] = (size - 1).into();
    let md = entry["digest"].as_str().unwrap().to_string();
    std::fs::write(&ip, serde_json::to_vec(&index).unwrap()).unwrap();
    let p = oci_publish(&s, &oci);
    outcome(refused(
        &s,
        &p,
        QUICK,
        &[&md, &format!("longer than the declared {} bytes", size - 1)],
    ))
}

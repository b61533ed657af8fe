//! The CVMFS correctness corpus: images described in a few lines each, layers in
//! the `layer_spec` format (see `src/layer_spec.rs`), bottom layer first.

/// One image of the corpus.
pub struct Image {
    pub name: String,
    /// Layer specs, bottom layer first.
    pub layers: Vec<String>,
}

fn img(name: &str, layers: &[&str]) -> Image {
    Image {
        name: name.to_string(),
        layers: layers.iter().map(|s| s.to_string()).collect(),
    }
}

/// A base layer most images start from.
const BASE: &str = "
dir /etc 0755
file /etc/hosts 0644 \"127.0.0.1 localhost\\n\"
file /etc/passwd 0644 \"root:x:0:0::/root:/bin/sh\\n\"
dir /usr/bin 0755
file /usr/bin/passwd 04755 size=3000
file /usr/bin/tool 0755 size=100
dir /tmp 01777
dir /data 0755
dir /data/x 0755
file /data/x/1 \"one\"
file /data/x/2 \"two\"
dir /data/x/sub
file /data/x/sub/deep \"deep\"
dir /var/lib/app 0750 1000:1000
file /var/lib/app/state 0640 1000:1000 \"state\"
";

/// Every image of the corpus.
pub fn images() -> Vec<Image> {
    let mut v = vec![
        img("base-only", &[BASE]),
        img(
            "whiteout-top-level",
            &[BASE, "file /keep \"k\"\nwhiteout /tmp\nwhiteout /usr"],
        ),
        img(
            "whiteout-depth-1",
            &[BASE, "dir /etc\nwhiteout /etc/hosts\nfile /etc/new \"n\""],
        ),
        img(
            "whiteout-depth-3",
            &[BASE, "dir /data\ndir /data/x\ndir /data/x/sub\nwhiteout /data/x/sub/deep"],
        ),
        img(
            "whiteouts-several-layers",
            &[
                BASE,
                "dir /etc\nwhiteout /etc/hosts",
                "dir /etc\nfile /etc/hosts \"again\"\nwhiteout /etc/passwd",
                "dir /data/x\nwhiteout /data/x/1\nwhiteout /data/x/2",
            ],
        ),
        img(
            "opaque-dir",
            &[BASE, "dir /data/x\nopaque /data/x\nfile /data/x/3 \"three\""],
        ),
        img(
            "opaque-empty",
            &[BASE, "dir /data\ndir /data/x\nopaque /data/x"],
        ),
        img(
            "opaque-then-more",
            &[
                BASE,
                "dir /data/x\nopaque /data/x\nfile /data/x/3 \"three\"",
                "dir /data/x\nfile /data/x/4 \"four\"\nwhiteout /data/x/3",
            ],
        ),
        img(
            "delete-then-recreate-file",
            &[BASE, "dir /etc\nwhiteout /etc/hosts\nfile /etc/hosts 0600 \"new\""],
        ),
        img(
            "delete-then-recreate-dir",
            &[
                BASE,
                "dir /data\nwhiteout /data/x\ndir /data/x 0700\nfile /data/x/fresh \"f\"",
            ],
        ),
        img(
            "whiteout-of-directory",
            &[BASE, "dir /data\nwhiteout /data/x\nwhiteout /var/lib"],
        ),
        img(
            "file-replaces-dir",
            &[BASE, "dir /data\nwhiteout /data/x\nfile /data/x \"now a file\""],
        ),
        img(
            "dir-replaces-file",
            &[BASE, "dir /etc\nwhiteout /etc/hosts\ndir /etc/hosts\nfile /etc/hosts/a \"a\""],
        ),
        img(
            "hardlinks",
            &[
                BASE,
                "dir /h\nfile /h/a 0644 1000:1000 \"linked\"\nhardlink /h/b => /h/a\nhardlink /h/c => /h/a\nfile /h/solo \"s\"",
            ],
        ),
        img(
            "hardlink-partly-deleted",
            &[
                "dir /h\nfile /h/a \"linked\"\nhardlink /h/b => /h/a",
                "dir /h\nwhiteout /h/a",
            ],
        ),
        img(
            "symlinks",
            &[
                BASE,
                "dir /s\nsymlink /s/rel -> ../etc/hosts\nsymlink /s/abs -> /etc/passwd\nsymlink /s/dangling -> /nowhere/at/all\nsymlink /s/dir -> /usr/bin\nsymlink /s/owned -> x 1000:1000",
            ],
        ),
        img(
            "symlink-replaced",
            &[
                "dir /s\nsymlink /s/l -> a\nfile /s/a \"a\"",
                "dir /s\nwhiteout /s/l\nsymlink /s/l -> /abs/target",
            ],
        ),
        img(
            "devices-and-fifos",
            &[
                BASE,
                "dir /dev\nchar /dev/null 1:3 0666\nchar /dev/tty 5:0 0620 0:5\nblock /dev/loop0 7:0 0660 0:6\nfifo /dev/fifo 0600 1000:1000",
            ],
        ),
        img(
            "devices-deleted",
            &[
                "dir /dev\nchar /dev/null 1:3 0666\nfifo /dev/f",
                "dir /dev\nwhiteout /dev/f\nblock /dev/sda 8:0",
            ],
        ),
        img(
            "sparse-and-empty",
            &[
                "dir /f\nfile /f/empty\nfile /f/empty2 0600 1000:1000\nfile /f/big size=1048576\nfile /f/odd size=4097",
            ],
        ),
        img(
            "xattrs",
            &[
                BASE,
                "dir /x\nxattr /x user.dir=1\nfile /x/f \"x\"\nxattr /x/f user.k=v\nxattr /x/f user.other=value2",
                "dir /x\nfile /x/g \"g\"\nxattr /x/g user.g=1",
            ],
        ),
        img(
            "xattr-dir-under-whiteout",
            &[
                "dir /x 0700 1000:1000\nxattr /x user.dir=lower\nfile /x/a \"a\"",
                "dir /x 0750 1000:1000\nxattr /x user.dir=upper\nwhiteout /x/a",
            ],
        ),
        img(
            "setuid-setgid-sticky",
            &[
                "dir /b\nfile /b/su 04755 \"su\"\nfile /b/sg 02755 \"sg\"\ndir /b/sticky 01777\nfile /b/all 07755 \"all\"",
            ],
        ),
        img(
            "non-root-ownership",
            &[
                BASE,
                "dir /home 0755\ndir /home/u 0700 1000:1000\nfile /home/u/f 0600 1000:1000 \"mine\"\nfile /home/u/g 0640 1000:100 \"g\"\nsymlink /home/u/l -> f 1000:1000\nfile /srv 0644 65534:65534 \"nobody\"",
            ],
        ),
        img(
            "ownership-changed-above",
            &[
                "dir /o 0755 1000:1000\nfile /o/f 0644 1000:1000 \"f\"",
                "dir /o 0755 2000:2000\nfile /o/f 0644 3000:3000 \"f2\"",
            ],
        ),
        img("long-names-deep-paths", &[&long_names(), &long_names_delete()]),
        img(
            "whiteout-markers-with-parent-mode",
            &[
                "dir /m 0700 1000:1000\nfile /m/a \"a\"\nfile /m/b \"b\"",
                "dir /m 0711 1000:1000\nwhiteout /m/a",
            ],
        ),
        img(
            "opaque-root-child-deleted-later",
            &[
                BASE,
                "dir /data 0700\nopaque /data\nfile /data/new \"n\"",
                "whiteout /data",
                "dir /data 0755\nfile /data/again \"a\"",
            ],
        ),
    ];
    v.push(many_layers("200-layers", 200));
    // The deepest stack overlayfs takes as plain lowers is 500 directories;
    // with a whiteout layer between every two raw layers this one needs a
    // nested mount for its bottom part.
    v.push(many_layers("500-layers", 500));
    v
}

fn long_names() -> String {
    let long = "n".repeat(255);
    let mut s = String::new();
    let mut p = String::new();
    for i in 0..40 {
        p.push_str(&format!("/d{i:02}"));
        s.push_str(&format!("dir {p}\n"));
    }
    s.push_str(&format!("file {p}/{long} \"deep and long\"\n"));
    s.push_str(&format!("file {p}/x \"x\"\n"));
    // The longest name a marker can delete: ".wh." + 251 bytes is NAME_MAX.
    s.push_str(&format!(
        "dir /{}\nfile /{}/{} \"y\"\nfile /{}/{} \"z\"\n",
        &long[..200],
        &long[..200],
        long,
        &long[..200],
        &long[..251]
    ));
    s
}

fn long_names_delete() -> String {
    let mut p = String::new();
    let mut s = String::new();
    for i in 0..40 {
        p.push_str(&format!("/d{i:02}"));
        s.push_str(&format!("dir {p}\n"));
    }
    s.push_str(&format!("whiteout {p}/x\n"));
    let long = "n".repeat(251);
    s.push_str(&format!(
        "dir /{}\nwhiteout /{}/{}\n",
        &long[..200],
        &long[..200],
        long
    ));
    s
}

/// `n` layers, each adding a file, replacing one of the layer below and
/// deleting another, with an opaque directory every tenth layer.
pub fn many_layers(name: &str, n: usize) -> Image {
    let mut layers = vec![BASE.to_string()];
    for i in 1..n {
        let mut s = format!("dir /m\nfile /m/f{i} \"{i}\"\nfile /m/shared \"v{i}\"\n");
        if i >= 2 {
            s.push_str(&format!("whiteout /m/f{}\n", i - 1));
        }
        if i % 10 == 0 {
            s.push_str(&format!("dir /o\nopaque /o\nfile /o/g{i} \"{i}\"\n"));
        }
        layers.push(s);
    }
    Image {
        name: name.to_string(),
        layers,
    }
}

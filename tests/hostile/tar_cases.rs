//! Hostile layer tars: each is published into a fresh repository and must be
//! refused with an error naming image, layer and entry, with the canary tree
//! unchanged and the repository consistent afterwards.

use crate::support::*;

pub fn cases() -> Vec<Case> {
    vec![Case {
        name: "tar/dotdot-file-climbs-to-canary",
        run: dotdot_file,
    }]
}

fn dotdot_file() -> Outcome {
    let s = Scene::new("dotdot");
    let name = format!("{}/etc/pwned", s.climb_to_canary());
    let tar = RawTar::new().dir("etc").file(&name, b"pwned").end();
    let run = s.publish("example.org/hostile/dotdot:1", &[tar]);
    outcome(s.refused(&run, &["example.org/hostile/dotdot:1", &name]))
}

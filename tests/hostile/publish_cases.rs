//! Hostile cases: see main.rs. Each case is a function returning an `Outcome`.

use crate::support::*;

pub fn cases() -> Vec<Case> {
    vec![]
}

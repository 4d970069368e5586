//! `cargo bench -p diffugen --bench gallery`: the gallery at 100,000 synthetic entries, measured in one run
//! (median of 20 after a warm-up):
//! - the first page of 200, newest first (target < 20 ms);
//! - a one-word search, first page of 200 (target < 50 ms), for a word in ~2 % of prompts and one in ~30 %;
//! - opening the database and reading the first page, as the app does at start-up (target < 300 ms).

use std::time::Instant;

use diffugen_gallery::{Gallery, Query};

const ENTRIES: usize = 100_000;
const RUNS: usize = 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time(mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect(),
    )
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let vocabulary: Vec<String> = (0..500).map(|i| format!("word{i}")).collect();
    let rows: Vec<(String, f64, String, String)> = (0..ENTRIES)
        .map(|i| {
            let mut words: Vec<&str> = (0..12)
                .map(|_| vocabulary[rng.usize(..vocabulary.len())].as_str())
                .collect();
            if rng.f64() < 0.3 {
                words.push("portrait");
            }
            (
                format!("/synthetic/{i}.png"),
                1.7e9 + i as f64 * 10.0,
                words.join(" "),
                format!("model{}", i % 7),
            )
        })
        .collect();
    let build = Instant::now();
    {
        let gallery = Gallery::open(dir.path()).unwrap();
        gallery.insert_synthetic(&rows).unwrap();
    }
    println!(
        "gallery benchmark: {ENTRIES} entries (built in {:.1} s), median of {RUNS}",
        build.elapsed().as_secs_f64()
    );

    let gallery = Gallery::open(dir.path()).unwrap();
    let page = |text: Option<&str>| Query {
        text: text.map(String::from),
        limit: Some(200),
        ..Query::default()
    };
    let first = time(|| assert_eq!(gallery.list(&page(None)).unwrap().entries.len(), 200));
    let rare = time(|| {
        assert!(!gallery
            .list(&page(Some("word123")))
            .unwrap()
            .entries
            .is_empty())
    });
    let common = time(|| {
        assert_eq!(
            gallery.list(&page(Some("portrait"))).unwrap().entries.len(),
            200
        )
    });
    let startup = time(|| {
        let gallery = Gallery::open(dir.path()).unwrap();
        assert_eq!(gallery.list(&page(None)).unwrap().entries.len(), 200);
    });
    let verdict = |ms: f64, target: f64| if ms < target { "OK" } else { "OVER" };
    println!(
        "  first page of 200:                      {first:7.2} ms (target < 20 ms): {}",
        verdict(first, 20.0)
    );
    println!(
        "  one-word search, word in ~2 % of prompts: {rare:7.2} ms (target < 50 ms): {}",
        verdict(rare, 50.0)
    );
    println!(
        "  one-word search, word in ~30 %:          {common:7.2} ms (target < 50 ms): {}",
        verdict(common, 50.0)
    );
    println!(
        "  open the database + first page:          {startup:7.2} ms (target < 300 ms): {}",
        verdict(startup, 300.0)
    );
}

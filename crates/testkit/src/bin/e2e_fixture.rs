//! `diffugen-e2e-fixture <data dir> [--synthetic N] [--creative]`: builds (or reuses) the small real test model, links
//! it into `<data dir>/models/`, and optionally fills the gallery with N synthetic entries (each a hard link to one
//! small real PNG, so every thumbnail the grid asks for is really made and served), so the desktop end-to-end test
//! can time scrolling a 100,000-image gallery. `--creative` also links the test ESRGAN (`ESRGAN/tiny-esrgan-x4`) and
//! the SD 1.x + ControlNet pair (`sd15-test`, `controlnet/test-control`) for the A1111 client check.
//! Prints the model's path.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    const USAGE: &str = "usage: diffugen-e2e-fixture <data dir> [--synthetic N] [--creative]";
    let mut args = std::env::args().skip(1);
    let data_dir = match args.next() {
        Some(help) if help == "--help" || help == "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        // An option where the folder belongs is a mistake, not a folder to create.
        Some(dir) if !dir.starts_with('-') => PathBuf::from(dir),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut synthetic = 0u32;
    let mut creative = false;
    while let Some(arg) = args.next() {
        if arg == "--creative" {
            creative = true;
            continue;
        }
        match (arg.as_str(), args.next().map(|n| n.parse::<u32>())) {
            ("--synthetic", Some(Ok(n))) => synthetic = n,
            _ => {
                eprintln!("{USAGE}; got '{arg}'");
                return ExitCode::from(2);
            }
        }
    }
    if creative {
        if let Err(e) = link_creative(&data_dir) {
            eprintln!("diffugen-e2e-fixture: {e}");
            return ExitCode::FAILURE;
        }
    }
    match run(&data_dir, synthetic) {
        Ok(model) => {
            println!("{}", model.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("diffugen-e2e-fixture: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Links `target` at `link` (a copy where links cannot be made), unless something is there already.
fn link(target: &std::path::Path, link: &std::path::Path) -> Result<(), String> {
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    if !link.exists() {
        std::os::unix::fs::symlink(target, link)
            .or_else(|_| std::fs::copy(target, link).map(drop))
            .map_err(|e| format!("{}: {e}", link.display()))?;
    }
    Ok(())
}

fn link_creative(data_dir: &std::path::Path) -> Result<(), String> {
    let models = data_dir.join("models");
    link(
        &diffugen_testkit::test_upscaler(4),
        &models.join("ESRGAN/tiny-esrgan-x4.gguf"),
    )?;
    link(
        &diffugen_testkit::test_sd15(),
        &models.join("sd15-test.gguf"),
    )?;
    link(
        &diffugen_testkit::test_controlnet(),
        &models.join("controlnet/test-control.gguf"),
    )
}

fn run(data_dir: &std::path::Path, synthetic: u32) -> Result<PathBuf, String> {
    let model = diffugen_testkit::test_model();
    let models = data_dir.join("models");
    std::fs::create_dir_all(&models).map_err(|e| format!("{}: {e}", models.display()))?;
    let link = models.join("tiny-sdxs.gguf");
    if !link.exists() {
        std::os::unix::fs::symlink(&model, &link)
            .or_else(|_| std::fs::copy(&model, &link).map(drop))
            .map_err(|e| format!("{}: {e}", link.display()))?;
    }
    if synthetic > 0 {
        let gallery = diffugen_gallery::Gallery::open(data_dir).map_err(|e| e.to_string())?;
        let outputs = data_dir.join("synthetic");
        std::fs::create_dir_all(&outputs).map_err(|e| format!("{}: {e}", outputs.display()))?;
        // File systems cap the links to one file (ext4: 65,000), so each 50,000 entries get their own swatch.
        let swatch = |chunk: u32| -> Result<PathBuf, String> {
            let png = outputs.join(format!("swatch-{chunk}.png"));
            if !png.exists() {
                image::RgbImage::from_fn(64, 64, |x, y| {
                    image::Rgb([(x * 4) as u8, (y * 4) as u8, 160 + (chunk as u8 % 4) * 30])
                })
                .save(&png)
                .map_err(|e| format!("{}: {e}", png.display()))?;
            }
            Ok(png)
        };
        let words = [
            "harbor", "forest", "portrait", "city", "desert", "galaxy", "garden", "storm",
        ];
        let mut rows: Vec<(String, f64, String, String)> = Vec::with_capacity(synthetic as usize);
        for i in 0..synthetic {
            let file = outputs.join(format!("s{i}.png"));
            if !file.exists() {
                std::fs::hard_link(swatch(i / 50_000)?, &file)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
            }
            rows.push((
                file.display().to_string(),
                1_600_000_000.0 + f64::from(i),
                format!("a {} scene number {i}", words[i as usize % words.len()]),
                "synthetic".to_string(),
            ));
        }
        gallery.insert_synthetic(&rows).map_err(|e| e.to_string())?;
    }
    Ok(model)
}

//! The DiffuGen desktop shell. It will be a thin layer of Tauri commands and events over the same job API the CLI
//! uses; the window, its commands and the web UI in `ui/` arrive with the desktop issue. What is here already: the
//! TypeScript bindings of every type the UI receives, generated from the Rust types by a test and committed as
//! `ui/src/lib/bindings.ts`, so the UI and the core can never drift apart silently.

/// Every type the UI receives (progress events, queue, VRAM meter, gallery, model cards, downloads, settings).
pub fn ui_types() -> specta::Types {
    specta::Types::default()
        .register::<diffugen_engine::JobEvent>()
        .register::<diffugen_jobs::JobInfo>()
        .register::<diffugen_vram::VramSnapshot>()
        .register::<diffugen_vram::VramEvent>()
        .register::<diffugen_vram::SwitchReport>()
        .register::<diffugen_models::ModelCard>()
        .register::<diffugen_models::ModelEntry>()
        .register::<diffugen_gallery::Page>()
        .register::<diffugen_gallery::Query>()
        .register::<diffugen_gallery::ReindexReport>()
        .register::<diffugen_downloads::DownloadEvent>()
        .register::<diffugen_downloads::CatalogEntry>()
        .register::<diffugen_downloads::PullInfo>()
        .register::<diffugen_settings::Settings>()
}

#[cfg(test)]
mod tests {
    const BINDINGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ui/src/lib/bindings.ts");

    #[test]
    fn the_committed_typescript_bindings_match_the_rust_types() {
        let generated = specta_typescript::Typescript::default()
            .header("// Generated from the Rust types by `cargo test -p diffugen-desktop`; do not edit.\n")
            .export(&super::ui_types(), specta_serde::Format)
            .expect("every UI type exports to TypeScript");
        assert!(
            !generated.contains("bigint"),
            "a 64-bit integer crossed to the UI"
        );
        let committed = std::fs::read_to_string(BINDINGS).unwrap_or_default();
        if committed != generated {
            std::fs::create_dir_all(std::path::Path::new(BINDINGS).parent().unwrap()).unwrap();
            std::fs::write(BINDINGS, &generated).unwrap();
            panic!(
                "ui/src/lib/bindings.ts was stale and has been regenerated: review and commit it"
            );
        }
    }
}

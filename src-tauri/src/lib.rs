//! The DiffuGen desktop shell. It will be a thin layer of Tauri commands and events over the same job API the CLI
//! uses (`diffugen-engine`); the window, its commands and the web UI in `ui/` arrive with the desktop issue.

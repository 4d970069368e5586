// No console window behind the app on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() -> std::process::ExitCode {
    // The engine runs in a child process of this same executable, so a crash in sd.cpp fails one job, not the app.
    if std::env::args().nth(1).as_deref() == Some(diffugen_engine::WORKER_SUBCOMMAND) {
        return std::process::ExitCode::from(diffugen_engine::worker::run().clamp(0, 255) as u8);
    }
    diffugen_desktop::run()
}

//! `diffugen gallery ...`: browse, search and tend the gallery of the data folder.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use diffugen_gallery::{Entry, Order, Query};

use diffugen_runtime::Config;

#[derive(Args)]
pub struct GalleryArgs {
    #[command(subcommand)]
    command: GalleryCommand,
}

#[derive(Args, Clone)]
struct Filters {
    /// Only this model id
    #[arg(long)]
    model: Option<String>,
    /// Only this family (sd1, sdxl, flux, ...)
    #[arg(long)]
    family: Option<String>,
    /// Only favorites
    #[arg(long)]
    favorite: bool,
    /// Only images filed in this board
    #[arg(long)]
    board: Option<String>,
    /// Made on or after this day (YYYY-MM-DD) or Unix time
    #[arg(long, value_name = "DATE")]
    from: Option<String>,
    /// Made on or before this day (YYYY-MM-DD, inclusive) or Unix time
    #[arg(long, value_name = "DATE")]
    to: Option<String>,
    #[arg(long)]
    width: Option<u32>,
    #[arg(long)]
    height: Option<u32>,
    /// Oldest first (default: newest first)
    #[arg(long)]
    oldest: bool,
    /// Entries per page, 1..500
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue after a previous page (its next_cursor)
    #[arg(long)]
    cursor: Option<String>,
    /// List the trash instead
    #[arg(long)]
    trash: bool,
    /// Print JSON ({entries, next_cursor}; every recorded field)
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum GalleryCommand {
    /// List images, newest first
    List(Filters),
    /// Find images by the words of their prompt, negative prompt or tags
    Search {
        query: String,
        #[command(flatten)]
        filters: Filters,
    },
    /// Every recorded parameter of one image
    Show {
        id: u32,
        #[arg(long)]
        json: bool,
    },
    /// Mark an image as a favorite (or unmark it with --off)
    Favorite {
        id: u32,
        #[arg(long)]
        off: bool,
    },
    /// File an image into a board (created if new), or take it out with --remove
    Board {
        id: u32,
        name: String,
        #[arg(long)]
        remove: bool,
    },
    /// List the boards
    Boards,
    /// Set an image's tags (searched with its prompt); no tags clears them
    Tag { id: u32, tags: Vec<String> },
    /// Move an image to the trash (restorable)
    Delete { id: u32 },
    /// Bring an image back from the trash
    Restore { id: u32 },
    /// Delete the trashed images for good
    EmptyTrash,
    /// Print an image's parameters as a job request (for `POST /api/v1/jobs`)
    Remix { id: u32 },
    /// Rebuild the gallery from the PNG files: the outputs folder, or another tool's folder with --dir
    Reindex {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_time(text: &str, field: &str, end_of_day: bool) -> Result<f64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok(seconds);
    }
    let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        format!("invalid --{field}: '{text}' is not a date; use YYYY-MM-DD or Unix seconds")
    })?;
    let time = if end_of_day {
        day.and_hms_opt(23, 59, 59)
    } else {
        day.and_hms_opt(0, 0, 0)
    }
    .expect("valid time of day");
    let local = time
        .and_local_timezone(chrono::Local)
        .earliest()
        .ok_or_else(|| {
            format!("invalid --{field}: '{text}' does not exist in the local time zone")
        })?;
    Ok(local.timestamp() as f64)
}

impl Filters {
    fn query(&self, text: Option<String>) -> Result<Query, String> {
        Ok(Query {
            text,
            model: self.model.clone(),
            family: self.family.clone(),
            board: self.board.clone(),
            favorite: self.favorite.then_some(true),
            from: self
                .from
                .as_deref()
                .map(|t| parse_time(t, "from", false))
                .transpose()?,
            to: self
                .to
                .as_deref()
                .map(|t| parse_time(t, "to", true))
                .transpose()?,
            width: self.width,
            height: self.height,
            order: if self.oldest {
                Order::Oldest
            } else {
                Order::Newest
            },
            cursor: self.cursor.clone(),
            limit: Some(self.limit),
            trashed: self.trash,
        })
    }
}

fn when(created: f64) -> String {
    chrono::DateTime::from_timestamp(created as i64, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

fn line(e: &Entry) -> String {
    let prompt: String = e.prompt.chars().take(60).collect();
    format!(
        "{:>7}  {}  {:<16}  {:>4}x{:<4}  {:<11}  {}{}",
        e.id,
        when(e.created),
        e.model.as_deref().unwrap_or("?"),
        e.width,
        e.height,
        e.seed.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        if e.favorite { "* " } else { "" },
        prompt.replace('\n', " ")
    )
}

fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn describe(e: &Entry) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut text = format!(
        "id          {}\npath        {}\ncreated     {}\nprompt      {}\nnegative    {}\nmodel       {} ({})\n\
         size        {}x{}\nsteps       {}\ncfg scale   {}\nsampler     {}\nscheduler   {}\nseed        {}\n",
        e.id,
        e.path,
        when(e.created),
        e.prompt,
        e.negative_prompt,
        opt(e.model.clone()),
        opt(e.family.clone()),
        e.width,
        e.height,
        opt(e.steps.map(|s| s.to_string())),
        opt(e.cfg_scale.map(|s| s.to_string())),
        opt(e.sampler.clone()),
        opt(e.scheduler.clone()),
        opt(e.seed.map(|s| s.to_string())),
    );
    if !e.loras.is_empty() {
        let loras: Vec<String> = e
            .loras
            .iter()
            .map(|l| format!("{}:{}", l.name, l.weight))
            .collect();
        text.push_str(&format!("loras       {}\n", loras.join(", ")));
    }
    if let Some(init) = &e.init_image {
        text.push_str(&format!(
            "init image  {init} (strength {})\n",
            opt(e.strength.map(|s| s.to_string()))
        ));
    }
    if let Some(seconds) = e.generation_seconds {
        text.push_str(&format!("took        {seconds:.1} s\n"));
    }
    text.push_str(&format!(
        "favorite    {}\ntags        {}\nboards      {}\nsource      {}{}\n",
        if e.favorite { "yes" } else { "no" },
        if e.tags.is_empty() {
            "-".into()
        } else {
            e.tags.join(", ")
        },
        if e.boards.is_empty() {
            "-".into()
        } else {
            e.boards.join(", ")
        },
        e.source,
        if e.trashed.is_some() {
            "\nin the trash (diffugen gallery restore ID brings it back)"
        } else {
            ""
        }
    ));
    text
}

pub fn run(paths: &Config, args: &GalleryArgs) -> Result<ExitCode, String> {
    let gallery = paths.gallery().map_err(|e| e.to_string())?;
    let list = |text: Option<String>, filters: &Filters| -> Result<ExitCode, String> {
        let page = gallery
            .list(&filters.query(text)?)
            .map_err(|e| e.to_string())?;
        if filters.json {
            print_json(&page)?;
        } else {
            if page.entries.is_empty() {
                eprintln!("no images match");
            }
            for entry in &page.entries {
                println!("{}", line(entry));
            }
            if let Some(cursor) = &page.next_cursor {
                eprintln!("more: --cursor {cursor}");
            }
        }
        Ok(ExitCode::SUCCESS)
    };
    let show = |entry: Entry, json: bool| -> Result<ExitCode, String> {
        if json {
            print_json(&entry)?;
        } else {
            print!("{}", describe(&entry));
        }
        Ok(ExitCode::SUCCESS)
    };
    let e = |e: diffugen_gallery::GalleryError| e.to_string();
    match &args.command {
        GalleryCommand::List(filters) => list(None, filters),
        GalleryCommand::Search { query, filters } => {
            if diffugen_gallery::fts_query(query).is_none() {
                return Err(format!(
                    "invalid query: '{query}' has no words to search for"
                ));
            }
            list(Some(query.clone()), filters)
        }
        GalleryCommand::Show { id, json } => show(gallery.get(*id).map_err(e)?, *json),
        GalleryCommand::Favorite { id, off } => {
            let entry = gallery.set_favorite(*id, !off).map_err(e)?;
            println!(
                "{} {}",
                entry.id,
                if entry.favorite {
                    "is a favorite"
                } else {
                    "is no longer a favorite"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        GalleryCommand::Board { id, name, remove } => {
            let entry = if *remove {
                gallery.remove_from_board(*id, name)
            } else {
                gallery.add_to_board(*id, name)
            }
            .map_err(e)?;
            println!("{} boards: {}", entry.id, entry.boards.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        GalleryCommand::Tag { id, tags } => {
            let entry = gallery.set_tags(*id, tags).map_err(e)?;
            println!("{} tags: {}", entry.id, entry.tags.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        GalleryCommand::Boards => {
            for (name, count) in gallery.boards().map_err(e)? {
                println!("{count:>7}  {name}");
            }
            Ok(ExitCode::SUCCESS)
        }
        GalleryCommand::Delete { id } => {
            let entry = gallery.delete(*id).map_err(e)?;
            println!(
                "{} moved to the trash (diffugen gallery restore {} brings it back)",
                entry.id, entry.id
            );
            Ok(ExitCode::SUCCESS)
        }
        GalleryCommand::Restore { id } => {
            let entry = gallery.restore(*id).map_err(e)?;
            println!("{} restored to {}", entry.id, entry.path);
            Ok(ExitCode::SUCCESS)
        }
        GalleryCommand::EmptyTrash => {
            let count = gallery.empty_trash().map_err(e)?;
            println!("deleted {count} image(s) for good");
            Ok(ExitCode::SUCCESS)
        }
        GalleryCommand::Remix { id } => {
            print_json(&gallery.remix(*id).map_err(e)?)?;
            Ok(ExitCode::SUCCESS)
        }
        GalleryCommand::Reindex { dir, json } => {
            let report = gallery.reindex(dir.as_deref()).map_err(e)?;
            if *json {
                print_json(&report)?;
            } else {
                println!(
                    "scanned {} PNG(s): {} added, {} row(s) without a file removed, {} unreadable",
                    report.scanned,
                    report.added,
                    report.removed,
                    report.unreadable.len()
                );
                for file in &report.unreadable {
                    eprintln!("unreadable: {file}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

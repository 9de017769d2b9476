//! `objmapper fsck`: opens the store offline (the server must be stopped), which runs
//! recovery (damaged journal regions skipped, objects re-admitted from their files'
//! labels), reads every object against its checksum, and lists what `lost+found/`
//! holds, optionally removing it.

use anyhow::{bail, Context, Result};
use objmapper_store::{LostKind, OpenError, Store};

use crate::admin::{human_bytes, table};
use crate::args::FsckArgs;
use crate::config::{self, Env, Settings};

pub fn run(a: FsckArgs) -> Result<()> {
    let path = config::config_path(&a.serve);
    let file = path.as_deref().map(config::load_file).transpose()?;
    let settings = Settings::resolve(
        &a.serve,
        path.as_deref().zip(file.as_ref()),
        &Env::current(),
    )?;
    let _log = crate::logging::init(&settings.log_level, settings.log_format)?;
    let cfg = settings.server_config()?.store;
    let store = match Store::open(cfg) {
        Ok(s) => s,
        Err(e @ OpenError::Locked { .. }) => {
            bail!(
                "{e}: stop the server first (objmapper fsck works on a store no process has open)"
            )
        }
        Err(e) => return Err(e).context("opening the store"),
    };
    let st = store.stats();
    let mut trouble = 0u64;
    for (name, t) in [("memory", &st.memory), ("disk", &st.disk)] {
        if t.journal_damage > 0 || t.readmitted > 0 {
            println!(
                "{name} tier: {} damaged journal region(s) skipped, {} object(s) re-admitted from their labels",
                t.journal_damage, t.readmitted
            );
        }
        trouble += t.journal_damage + t.readmitted;
    }
    let report = store.verify_all(None).context("reading every object")?;
    println!(
        "verified {} objects ({}): {} damaged",
        report.objects,
        human_bytes(report.bytes),
        report.damaged.len()
    );
    for d in &report.damaged {
        println!(
            "  dropped {} version {} ({} tier): {}",
            d.key.escape_ascii(),
            d.version,
            d.tier,
            d.reason
        );
    }
    trouble += report.damaged.len() as u64;
    let lost = store.lost_found().context("listing lost+found/")?;
    if lost.is_empty() {
        println!("lost+found/: empty");
    } else {
        let rows: Vec<Vec<String>> = lost
            .iter()
            .map(|f| {
                let what = match &f.kind {
                    LostKind::Object {
                        key,
                        version,
                        current,
                        intact,
                    } => format!(
                        "{} version {version}: {}, {}",
                        key.escape_ascii(),
                        if *intact { "intact" } else { "damaged" },
                        match current {
                            Some(v) => format!("the store holds version {v}"),
                            None => "the store holds no version".into(),
                        }
                    ),
                    LostKind::Unlabelled { why } => format!("unknown object: {why}"),
                    LostKind::Deleted => "a deleted version".into(),
                    LostKind::JournalFragment => "a copy of a damaged journal region".into(),
                    LostKind::Other => "not objmapper's".into(),
                };
                vec![
                    f.tier.to_string(),
                    f.path.display().to_string(),
                    human_bytes(f.bytes),
                    what,
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["TIER", "LOST+FOUND FILE", "SIZE", "WHAT"],
                &rows,
                &[false, false, true, false]
            )
        );
        if a.clean {
            let n = store.clear_lost_found().context("clearing lost+found/")?;
            println!("removed {n} file(s) from lost+found/");
        } else {
            println!("nothing in lost+found/ is ever served; `objmapper fsck --clean` removes it");
        }
    }
    store.close().context("closing the store")?;
    if trouble > 0 {
        bail!("the store had damage ({trouble} finding(s) above); what was intact is kept");
    }
    Ok(())
}

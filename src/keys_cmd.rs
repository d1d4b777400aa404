//! `sinter keys`: the bearer keys `sinter serve --auth on` accepts.

use crate::ctx::Ctx;
use crate::workspace::keys::KeySlot;
use crate::workspace::Workspace;
use serde_json::json;

#[derive(clap::Subcommand, Debug)]
pub enum KeysCmd {
    /// Which keys exist and when they were made (only their hashes are stored, so a key is
    /// shown once, when it is regenerated).
    Show,
    /// Makes a new primary or secondary key and prints it; the old one stops working within a
    /// second, also on running servers.
    Regenerate {
        #[arg(value_enum)]
        slot: KeySlot,
    },
}

pub fn main(c: KeysCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match c {
        KeysCmd::Show => {
            let ws = ctx.open()?;
            let keys = ws.keys()?;
            if ctx.json {
                return ctx.print_json(&keys);
            }
            let mut t = crate::table::new(&["slot", "created", "sha256"]);
            for slot in KeySlot::ALL {
                match keys.iter().find(|k| k.slot == slot) {
                    Some(k) => t.add_row(vec![
                        slot.to_string(),
                        crate::table::time(k.created),
                        format!("{}…", &k.hash[..12.min(k.hash.len())]),
                    ]),
                    None => t.add_row(vec![slot.to_string(), "-".into(), "(none)".into()]),
                };
            }
            println!("{t}");
            Ok(())
        }
        KeysCmd::Regenerate { slot } => {
            let ws = Workspace::init(&ctx.dir)?;
            let key = ws.regenerate_key(slot)?;
            if ctx.json {
                ctx.print_json(&json!({ "slot": slot, "key": key }))
            } else {
                println!("{key}");
                eprintln!(
                    "new {slot} key (shown only now; send it as Authorization: Bearer <key>)"
                );
                Ok(())
            }
        }
    }
}

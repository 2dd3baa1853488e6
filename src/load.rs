//! `qrgate load`: the load driver (filled in below).

#[derive(clap::Args, Debug)]
pub struct LoadArgs {}

pub fn run(_args: LoadArgs) -> Result<(), String> {
    Err("not yet".into())
}

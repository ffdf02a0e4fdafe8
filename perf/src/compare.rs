#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {}
pub fn run(_a: &CompareArgs, _fd: u64) -> anyhow::Result<()> {
    Ok(())
}

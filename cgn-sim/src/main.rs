use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cgn_sim::cli::Cli::parse();
    anyhow::bail!(
        "cgn-sim: the PCP server and dataplane are not implemented yet (issues 4 and 5); \
         parsed {cli:?}"
    )
}

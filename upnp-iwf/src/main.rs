use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = upnp_iwf::cli::Cli::parse();
    anyhow::bail!(
        "upnp-iwf: the IGD server and PCP interworking are not implemented yet (issues 6 and \
         later); parsed {cli:?}"
    )
}

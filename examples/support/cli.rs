//! The command line of the examples with options: every flag must be one the example takes,
//! so a typo (`--step 100`) is an error instead of a silently ignored flag, and `--help`
//! prints the usage.

use declnet::{Error, Result};

/// Checks the command line against `options` (flags followed by a value, also written
/// `--flag=value`) and `switches` (flags alone). Returns `false` after printing `usage` for
/// `--help` or `-h`: the example then stops.
///
/// # Errors
/// [`Error::Usage`] naming an unknown flag, an option without its value, or a stray value.
pub fn check_args(usage: &str, options: &[&str], switches: &[&str]) -> Result<bool> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            println!("{usage}");
            return Ok(false);
        }
        let flag = arg.split_once('=').map_or(arg.as_str(), |(flag, _)| flag);
        if switches.contains(&flag) && flag == arg {
            continue;
        }
        if !options.contains(&flag) {
            return Err(Error::Usage(format!(
                "unknown argument `{arg}`; `--help` lists the options"
            )));
        }
        if flag == arg && args.next().is_none() {
            return Err(Error::Usage(format!("`{flag}` needs a value")));
        }
    }
    Ok(true)
}

/// The value of option `flag` (`--flag value` or `--flag=value`), if given.
pub fn value_of(flag: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == flag {
            return args.next();
        }
        if let Some(value) = arg
            .strip_prefix(flag)
            .and_then(|rest| rest.strip_prefix('='))
        {
            return Some(value.to_owned());
        }
    }
    None
}

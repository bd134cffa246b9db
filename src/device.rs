//! Choosing the device from the command line: `--device cpu` (the default) or
//! `--device cuda` / `--device cuda:N`, as every example takes.

use declnet_runtime::{Error, Result};

/// The device a program was asked to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    /// The host CPU.
    Cpu,
    /// The CUDA device with this ordinal.
    Cuda(usize),
}

impl DeviceArg {
    /// Reads `--device cpu|cuda[:N]` (or `--device=..`) from the process's arguments.
    ///
    /// # Errors
    /// [`Error::Usage`] for an unknown device or a missing value.
    pub fn from_args() -> Result<Self> {
        Self::parse(std::env::args().skip(1))
    }

    /// Reads `--device cpu|cuda[:N]` from `args`; `Cpu` when absent.
    ///
    /// # Errors
    /// [`Error::Usage`] for an unknown device or a missing value.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self> {
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let value = match arg.strip_prefix("--device") {
                Some("") => args.next(),
                Some(rest) => rest.strip_prefix('=').map(str::to_owned),
                None => continue,
            };
            return value
                .as_deref()
                .map_or_else(|| Err(usage("`--device` needs a value")), Self::from_name);
        }
        Ok(Self::Cpu)
    }

    fn from_name(name: &str) -> Result<Self> {
        match name.split_once(':') {
            None if name == "cpu" => Ok(Self::Cpu),
            None if name == "cuda" => Ok(Self::Cuda(0)),
            Some(("cuda", ordinal)) => ordinal
                .parse()
                .map(Self::Cuda)
                .map_err(|_| usage(&format!("`{ordinal}` is not a device number"))),
            _ => Err(usage(&format!("unknown device `{name}`"))),
        }
    }
}

fn usage(problem: &str) -> Error {
    Error::Usage(format!(
        "{problem}; use `--device cpu`, `--device cuda` or `--device cuda:N`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<DeviceArg> {
        DeviceArg::parse(args.iter().map(ToString::to_string))
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(parse(&[]).unwrap(), DeviceArg::Cpu);
        assert_eq!(parse(&["--device", "cpu"]).unwrap(), DeviceArg::Cpu);
        assert_eq!(parse(&["--device", "cuda"]).unwrap(), DeviceArg::Cuda(0));
        assert_eq!(parse(&["--device=cuda:1"]).unwrap(), DeviceArg::Cuda(1));
        assert_eq!(
            parse(&["--other", "--device", "cuda:2"]).unwrap(),
            DeviceArg::Cuda(2)
        );
    }

    #[test]
    fn bad_values_are_usage_errors() {
        assert_eq!(
            parse(&["--device", "tpu"]).unwrap_err().to_string(),
            "usage: unknown device `tpu`; use `--device cpu`, `--device cuda` or `--device cuda:N`"
        );
        assert!(parse(&["--device"]).is_err());
        assert!(parse(&["--device", "cuda:x"]).is_err());
    }
}

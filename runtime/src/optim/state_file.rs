//! [`OptimizerState`] to and from a safetensors file, to resume training.

use std::path::Path;

use super::OptimizerState;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::{Metadata, load_tensors, save_tensors};

/// The metadata key holding the optimizer's name.
const OPTIMIZER: &str = "optimizer";
/// The metadata key `save_tensors` adds for `safetensors.torch`; not a scalar.
const FORMAT: &str = "format";

impl<B: Backend> OptimizerState<B> {
    /// Writes the state to a safetensors file at `path`: the buffers as tensors under their
    /// names, the optimizer's name (key `optimizer`) and every scalar (`lr`,
    /// `linear1.weight.step`) as string metadata, printed so that they read back exactly.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::optim::{OptimizerState, Sgd, SgdConfig};
    /// use declnet_runtime::{Cpu, Module, Param, Tensor};
    ///
    /// struct One(Param);
    /// impl Module<Cpu> for One {
    ///     fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) { f("w", &self.0) }
    ///     fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param)) { f("w", &mut self.0) }
    /// }
    ///
    /// let mut model = One(Param::new(Tensor::from_vec(vec![1.0], [1], &Cpu)));
    /// let config = SgdConfig { lr: 0.5, momentum: 0.9, ..SgdConfig::default() };
    /// let mut opt = Sgd::new(config);
    /// model.0.accumulate_grad(&Tensor::from_vec(vec![1.0], [1], &Cpu));
    /// opt.step(&mut model);
    ///
    /// let path = std::env::temp_dir().join("declnet-doc-optimizer-state.safetensors");
    /// opt.state().save(&path)?;
    /// let mut resumed = Sgd::new(config);
    /// resumed.try_load_state(&model, &OptimizerState::load(&path, &Cpu)?)?;
    /// let state = resumed.state();
    /// assert_eq!(state.tensors[0].0, "w.momentum_buffer");
    /// assert_eq!(state.tensors[0].1.to_vec(), [1.0]);
    /// # std::fs::remove_file(&path).ok();
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::OptimizerState`] when a scalar is named `optimizer` or `format` (the keys the
    /// file keeps for itself) or twice; [`Error::DuplicateName`] when two tensors share a name;
    /// [`Error::Io`] when the file cannot be written; a device error from downloading.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut metadata = Metadata::from([(OPTIMIZER.to_owned(), self.optimizer.clone())]);
        for (name, value) in &self.scalars {
            if name == FORMAT || metadata.insert(name.clone(), value.to_string()).is_some() {
                return Err(state_error(
                    "OptimizerState::save",
                    format!("scalar `{name}` clashes with another metadata entry"),
                ));
            }
        }
        let tensors: Vec<(&str, _)> = self
            .tensors
            .iter()
            .map(|(name, tensor)| (name.as_str(), tensor))
            .collect();
        save_tensors(path, &tensors, &metadata)
    }

    /// Reads a state that [`OptimizerState::save`] wrote, with its tensors on `device`; restore
    /// it with [`Optimizer::try_load_state`](super::Optimizer::try_load_state), which checks it
    /// against the optimizer and the model.
    ///
    /// # Errors
    /// [`Error::OptimizerState`] when the file has no `optimizer` metadata (a file of weights,
    /// not of optimizer state) or a scalar that is not a number; [`Error::Io`] when the file
    /// cannot be read, and as [`load_tensors`] for a malformed file.
    pub fn load(path: impl AsRef<Path>, device: &B) -> Result<Self> {
        let path = path.as_ref();
        let file = load_tensors(path, device)?;
        let mut metadata = file.metadata;
        let optimizer = metadata.remove(OPTIMIZER).ok_or_else(|| {
            state_error(
                "OptimizerState::load",
                format!(
                    "{} has no `{OPTIMIZER}` metadata: not an optimizer state file",
                    path.display()
                ),
            )
        })?;
        metadata.remove(FORMAT);
        let scalars = metadata
            .into_iter()
            .map(|(name, text)| match text.parse::<f64>() {
                Ok(value) => Ok((name, value)),
                Err(_) => Err(state_error(
                    "OptimizerState::load",
                    format!("scalar `{name}` is `{text}`, not a number"),
                )),
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            optimizer,
            scalars,
            tensors: file.tensors,
        })
    }
}

fn state_error(op: &'static str, message: String) -> Error {
    Error::OptimizerState { op, message }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::backend::Cpu;
    use crate::tensor::Tensor;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "declnet-state-file-{}-{name}.safetensors",
            std::process::id()
        ))
    }

    #[test]
    fn scalars_and_tensors_round_trip_exactly() {
        let state = OptimizerState {
            optimizer: "Adam".to_owned(),
            scalars: vec![
                ("lr".to_owned(), 0.1 + 0.2),
                ("w.step".to_owned(), 7.0),
                ("tiny".to_owned(), 1e-300),
            ],
            tensors: vec![(
                "w.exp_avg".to_owned(),
                Tensor::from_vec(vec![0.1, -3.5], [2], &Cpu),
            )],
        };
        let path = scratch("round-trip");
        state.save(&path).unwrap();
        let loaded = OptimizerState::load(&path, &Cpu).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loaded.optimizer, "Adam");
        let mut expected = state.scalars.clone();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(loaded.scalars, expected);
        assert_eq!(loaded.tensors.len(), 1);
        assert_eq!(loaded.tensors[0].0, "w.exp_avg");
        assert_eq!(loaded.tensors[0].1.to_vec(), [0.1, -3.5]);
    }

    #[test]
    fn a_weights_file_is_not_optimizer_state() {
        let path = scratch("weights");
        let w = Tensor::from_vec(vec![1.0], [1], &Cpu);
        save_tensors(&path, &[("w", &w)], &Metadata::new()).unwrap();
        let error = OptimizerState::load(&path, &Cpu).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "OptimizerState::load: {} has no `optimizer` metadata: not an optimizer state file",
                path.display()
            )
        );
    }

    #[test]
    fn a_scalar_that_is_not_a_number_is_an_error() {
        let path = scratch("not-a-number");
        let metadata = Metadata::from([
            ("optimizer".to_owned(), "SGD".to_owned()),
            ("lr".to_owned(), "fast".to_owned()),
        ]);
        save_tensors::<Cpu>(&path, &[], &metadata).unwrap();
        let error = OptimizerState::load(&path, &Cpu).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            error.to_string(),
            "OptimizerState::load: scalar `lr` is `fast`, not a number"
        );
    }

    #[test]
    fn scalars_named_like_reserved_keys_are_refused() {
        for name in ["optimizer", "format"] {
            let state = OptimizerState::<Cpu> {
                optimizer: "SGD".to_owned(),
                scalars: vec![(name.to_owned(), 1.0)],
                tensors: Vec::new(),
            };
            let path = scratch(name);
            let error = state.save(&path).unwrap_err();
            assert!(!path.exists(), "nothing is written on error");
            assert_eq!(
                error.to_string(),
                format!(
                    "OptimizerState::save: scalar `{name}` clashes with another metadata entry"
                )
            );
        }
    }

    #[test]
    fn truncated_and_missing_files_are_errors() {
        let path = scratch("truncated");
        std::fs::write(&path, [8, 0, 0, 0, 0, 0, 0, 0, b'{']).unwrap();
        let error = OptimizerState::<Cpu>::load(&path, &Cpu).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(error, Error::InvalidFile { .. }), "{error}");
        let error = OptimizerState::<Cpu>::load(scratch("missing"), &Cpu).unwrap_err();
        assert!(matches!(error, Error::Io { .. }), "{error}");
    }
}

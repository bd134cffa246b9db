//! Typed kernel arguments: each Rust type a launcher accepts says how the `.cu` signature
//! must declare the parameter it fills, so the kernel table's tests can hold every launcher
//! against its kernel's declaration and NVRTC's PTX (see `kernels.rs`).

use std::mem::{align_of, size_of};

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchArgs, PushKernelArg};

/// How a kernel's `.cu` signature declares one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Param {
    /// `const float*`: a buffer the kernel only reads.
    Input,
    /// `float*`: a buffer the kernel writes.
    Output,
    /// A value of the C type `c_type`, `size` bytes aligned to `align`.
    Value {
        c_type: &'static str,
        size: usize,
        align: usize,
    },
}

impl Param {
    /// The parameter as NVRTC's PTX declares it, without its name: `.u64`, `.f32`,
    /// `.align 8 .b8 [152]`...
    fn ptx(self) -> String {
        let scalar = match self {
            Self::Input | Self::Output => ".u64",
            Self::Value {
                c_type,
                size,
                align,
            } => match c_type {
                "unsigned long long" => ".u64",
                "int" | "unsigned int" => ".u32",
                "float" => ".f32",
                "double" => ".f64",
                _ => return format!(".align {align} .b8 [{size}]"),
            },
        };
        scalar.to_owned()
    }

    /// The parameter's type as a `.cu` signature writes it: `const float*`, `float*`, or the
    /// value's C type.
    #[cfg(test)]
    pub(crate) fn c_type(self) -> &'static str {
        match self {
            Self::Input => "const float*",
            Self::Output => "float*",
            Self::Value { c_type, .. } => c_type,
        }
    }
}

/// A Rust value that fills one kernel parameter.
pub(crate) trait KernelArg {
    /// The declaration the parameter must have.
    const PARAM: Param;

    /// Appends the value to `launch`'s arguments.
    fn push<'a>(self, launch: &mut LaunchArgs<'a>)
    where
        Self: 'a;
}

impl KernelArg for &CudaSlice<f32> {
    const PARAM: Param = Param::Input;

    fn push<'a>(self, launch: &mut LaunchArgs<'a>)
    where
        Self: 'a,
    {
        launch.arg(self);
    }
}

impl KernelArg for &mut CudaSlice<f32> {
    const PARAM: Param = Param::Output;

    fn push<'a>(self, launch: &mut LaunchArgs<'a>)
    where
        Self: 'a,
    {
        launch.arg(self);
    }
}

/// A part of a buffer the kernel only reads.
impl KernelArg for &CudaView<'_, f32> {
    const PARAM: Param = Param::Input;

    fn push<'a>(self, launch: &mut LaunchArgs<'a>)
    where
        Self: 'a,
    {
        launch.arg(self);
    }
}

/// A part of a buffer the kernel writes.
impl KernelArg for &mut CudaViewMut<'_, f32> {
    const PARAM: Param = Param::Output;

    fn push<'a>(self, launch: &mut LaunchArgs<'a>)
    where
        Self: 'a,
    {
        launch.arg(self);
    }
}

/// A buffer argument: the only kind that may be absent, passed as a null pointer.
pub(crate) trait BufferArg: KernelArg {}

impl BufferArg for &CudaSlice<f32> {}
impl BufferArg for &mut CudaSlice<f32> {}

/// The null pointer an absent optional buffer passes (a `u64` has a pointer's size).
static NULL: u64 = 0;

/// An optional buffer: null when absent.
impl<T: BufferArg> KernelArg for Option<T> {
    const PARAM: Param = T::PARAM;

    fn push<'a>(self, launch: &mut LaunchArgs<'a>)
    where
        Self: 'a,
    {
        match self {
            Some(buffer) => buffer.push(launch),
            None => {
                launch.arg(&NULL);
            }
        }
    }
}

/// A value passed by copy, with the C type that declares it.
///
/// # Safety
/// `C_TYPE` must have `Self`'s size, alignment and layout.
pub(crate) unsafe trait CValue: DeviceRepr {
    /// The C type's name as the `.cu` signature writes it.
    const C_TYPE: &'static str;
}

impl<T: CValue> KernelArg for &T {
    const PARAM: Param = Param::Value {
        c_type: T::C_TYPE,
        size: size_of::<T>(),
        align: align_of::<T>(),
    };

    fn push<'a>(self, launch: &mut LaunchArgs<'a>)
    where
        Self: 'a,
    {
        launch.arg(self);
    }
}

// SAFETY: each is the Rust type with the C type's size and representation on every target
// CUDA supports.
unsafe impl CValue for u64 {
    const C_TYPE: &'static str = "unsigned long long";
}
// SAFETY: as above.
unsafe impl CValue for i32 {
    const C_TYPE: &'static str = "int";
}
// SAFETY: as above.
unsafe impl CValue for u32 {
    const C_TYPE: &'static str = "unsigned int";
}
// SAFETY: as above.
unsafe impl CValue for f32 {
    const C_TYPE: &'static str = "float";
}
// SAFETY: as above.
unsafe impl CValue for f64 {
    const C_TYPE: &'static str = "double";
}

/// One op family's `.cu` file and its kernels' parameters as their launchers pass them.
pub(crate) struct Family {
    /// The file name NVRTC's messages use.
    pub(crate) file: &'static str,
    /// The source NVRTC compiles (some families generate part of it from their op table).
    pub(crate) source: fn() -> &'static str,
    pub(crate) kernels: &'static [(&'static str, &'static [Param])],
}

impl Family {
    /// Checks every kernel's launcher against the parameters NVRTC's `ptx` declares for it,
    /// so a launcher out of step with its kernel is an error before anything is launched.
    pub(crate) fn check_ptx(&self, ptx: &str) -> Result<(), String> {
        for &(kernel, params) in self.kernels {
            let declared = ptx_params(ptx, kernel)
                .ok_or_else(|| format!("`{}` has no kernel `{kernel}`", self.file))?;
            let passed: Vec<String> = params.iter().map(|param| param.ptx()).collect();
            if declared != passed {
                return Err(format!(
                    "the launcher of `{kernel}` ({}) passes ({}), but its PTX declares ({})",
                    self.file,
                    passed.join(", "),
                    declared.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// The parameters of `.entry kernel(...)` in `ptx`, without their names.
fn ptx_params(ptx: &str, kernel: &str) -> Option<Vec<String>> {
    let start = ptx.find(&format!(".entry {kernel}("))? + ".entry (".len() + kernel.len();
    let list = &ptx[start..start + ptx[start..].find(')')?];
    let params = list
        .split(',')
        .map(str::trim)
        .filter(|param| !param.is_empty())
        .enumerate()
        .map(|(index, param)| {
            let param = param.strip_prefix(".param ").unwrap_or(param);
            let param = param.replace(&format!(" {kernel}_param_{index}"), " ");
            // A pointer NVRTC annotated (`.u64 .ptr .global .align 4`) is still a `.u64`.
            match param.strip_prefix(".u64 .ptr") {
                Some(_) => ".u64".to_owned(),
                None => param.trim().to_owned(),
            }
        })
        .collect();
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTX: &str = "
.visible .entry scale_f32(
	.param .u64 .ptr .global .align 4 scale_f32_param_0,
	.param .u64 scale_f32_param_1,
	.param .f32 scale_f32_param_2,
	.param .align 8 .b8 scale_f32_param_3[16]
)
{
	ret;
}";

    fn family(params: &'static [Param]) -> Family {
        Family {
            file: "scale.cu",
            source: || "",
            kernels: Box::leak(Box::new([("scale_f32", params)])),
        }
    }

    const PAIR: Param = Param::Value {
        c_type: "Pair",
        size: 16,
        align: 8,
    };

    #[test]
    fn ptx_params_drop_names_and_pointer_annotations() {
        let params = ptx_params(PTX, "scale_f32").unwrap();
        assert_eq!(params, [".u64", ".u64", ".f32", ".align 8 .b8 [16]"]);
        assert_eq!(ptx_params(PTX, "scale"), None);
    }

    #[test]
    fn a_launcher_matching_its_ptx_passes() {
        let params = [
            Param::Output,
            <&u64 as KernelArg>::PARAM,
            <&f32 as KernelArg>::PARAM,
            PAIR,
        ];
        family(Box::leak(Box::new(params))).check_ptx(PTX).unwrap();
    }

    #[test]
    fn a_launcher_out_of_step_with_its_ptx_is_an_error_showing_both() {
        // An `int` where the kernel takes `unsigned long long`.
        let params = [
            Param::Output,
            <&i32 as KernelArg>::PARAM,
            <&f32 as KernelArg>::PARAM,
            PAIR,
        ];
        let error = family(Box::leak(Box::new(params)))
            .check_ptx(PTX)
            .unwrap_err();
        assert_eq!(
            error,
            "the launcher of `scale_f32` (scale.cu) passes (.u64, .u32, .f32, .align 8 .b8 [16]), \
             but its PTX declares (.u64, .u64, .f32, .align 8 .b8 [16])"
        );
        let missing = family(&[]).check_ptx("").unwrap_err();
        assert_eq!(missing, "`scale.cu` has no kernel `scale_f32`");
    }
}

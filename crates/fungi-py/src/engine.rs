//! The library's facade on the device the user chose: [`Engine`] is the backend (flex on the
//! CPU, CUDA where the wheel has it), [`Slot`] the facade object's stage ([`Unprepared`] until
//! a setup or a state makes it a ready [`Fungi`]).

use burn::backend::{Autodiff, Flex};
use fungi::backbone::{AutodiffVitOps, Precision, StateDict, Vit, VitConfig};
use fungi::core::{Error, FungiExtractor, Result};
use fungi::{Fungi, FungiConfig, ImageSource, Rows, Stream, Unprepared};

/// The CPU backend.
pub(crate) type FlexB = Autodiff<Flex>;
/// The CUDA backend.
#[cfg(feature = "cuda")]
pub(crate) type CudaB = Autodiff<burn::backend::Cuda>;

/// Where the backbone's weights come from.
pub(crate) enum Weights {
    /// A weights file (`.pth`, `.safetensors`, `.onnx`).
    File(std::path::PathBuf),
    /// A state dict handed over in memory (a torch module's).
    Tensors(StateDict),
}

impl Weights {
    /// The backbone `arch` with these weights, on `device`.
    pub(crate) fn load<B: AutodiffVitOps>(
        self,
        arch: &VitConfig,
        device: &B::Device,
    ) -> Result<Vit<B>> {
        Ok(match self {
            Self::File(p) => Vit::<B>::from_file(arch, p, device)?,
            Self::Tensors(sd) => Vit::<B>::from_state_dict(arch, &sd, device)?,
        })
    }
}

/// A compute device, as the user names it (`cpu`, `cuda`, `cuda:N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceKind {
    /// flex, on the CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl DeviceKind {
    /// Parses `cpu`, `cuda`, `cuda:N` (what `str(torch.device(...))` gives).
    pub(crate) fn parse(s: &str) -> std::result::Result<Self, String> {
        match s.split_once(':') {
            None if s == "cpu" => Ok(Self::Cpu),
            None if s == "cuda" => Ok(Self::Cuda(0)),
            Some(("cuda", i)) => i
                .parse()
                .map(Self::Cuda)
                .map_err(|_| format!("device {s:?}: the CUDA device index must be a number")),
            _ => Err(format!(
                "device {s:?}: expected \"cpu\", \"cuda\" or \"cuda:N\""
            )),
        }
    }

    /// The device's name: `cpu`, `cuda:N`.
    pub(crate) fn name(self) -> String {
        match self {
            Self::Cpu => "cpu".to_string(),
            Self::Cuda(i) => format!("cuda:{i}"),
        }
    }
}

/// The error of a slot whose stage a failed transition lost (the facade's `ready` after a
/// passed `check_ready` does not fail, so this is not expected to happen).
fn lost() -> fungi::core::Error {
    fungi::core::Error::Input(
        "this extractor was left unusable by an earlier failed call: create a new one".into(),
    )
}

/// The facade object's stage.
pub(crate) struct Slot<B: AutodiffVitOps> {
    stage: Option<Stage<B>>,
}

enum Stage<B: AutodiffVitOps> {
    Unprepared(Unprepared<B>),
    Ready(Fungi<B>),
}

impl<B: AutodiffVitOps> Slot<B> {
    /// Loads the backbone and builds the facade on `device`.
    pub(crate) fn build(
        device: &B::Device,
        arch: &VitConfig,
        weights: Weights,
        config: FungiConfig,
        precision: Precision,
    ) -> Result<Self> {
        let u = Fungi::<B>::builder(device)
            .backbone(weights.load(arch, device)?)
            .config(config)
            .precision(precision)
            .build()?;
        Ok(Self {
            stage: Some(Stage::Unprepared(u)),
        })
    }

    /// The stage; an error only after a transition failed half-way (the object must then be
    /// rebuilt).
    fn stage(&self) -> Result<&Stage<B>> {
        self.stage.as_ref().ok_or_else(lost)
    }

    /// The stage, unprepared, moved out (the caller puts a stage back).
    fn take_unprepared(&mut self) -> Result<Unprepared<B>> {
        Ok(match self.stage.take().ok_or_else(lost)? {
            Stage::Unprepared(u) => u,
            Stage::Ready(f) => f.into_unprepared(),
        })
    }

    /// The extractor (settings, blocks), at any stage.
    pub(crate) fn extractor(&self) -> Result<&FungiExtractor<B>> {
        Ok(match self.stage()? {
            Stage::Unprepared(u) => u.extractor(),
            Stage::Ready(f) => f.extractor(),
        })
    }

    /// Ready to extract: after a setup or a state, or when no objective needs either. Not
    /// ready: the error, and the object stays unprepared.
    fn ready(&mut self) -> Result<&Fungi<B>> {
        if let Stage::Unprepared(u) = self.stage()? {
            u.check_ready()?;
            let f = self.take_unprepared()?.ready()?;
            self.stage = Some(Stage::Ready(f));
        }
        match self.stage()? {
            Stage::Ready(f) => Ok(f),
            Stage::Unprepared(_) => Err(lost()),
        }
    }

    /// Runs the objectives' setup (again, when it ran before); on an error the object stays,
    /// unprepared, for another try.
    pub(crate) fn setup(
        &mut self,
        train: &(impl ImageSource + ?Sized),
        progress: Option<fungi::core::extractor::ProgressFn<'_>>,
        skip: Option<fungi::core::extractor::SkipFn<'_>>,
    ) -> Result<()> {
        let mut u = self.take_unprepared()?;
        let r = u.setup_in_place(train, progress, skip);
        self.stage = Some(Stage::Unprepared(u));
        r
    }

    /// Restores a saved state (all or nothing).
    pub(crate) fn load_state(&mut self, path: &std::path::Path) -> Result<()> {
        let mut u = self.take_unprepared()?;
        let r = u.load_state_in_place(path);
        self.stage = Some(Stage::Unprepared(u));
        r
    }

    /// Saves the state (needs a ready extractor).
    pub(crate) fn save_state(&mut self, path: &std::path::Path) -> Result<()> {
        self.ready()?.save_state(path)
    }

    /// Streams `source` through the pipeline.
    pub(crate) fn stream(
        &mut self,
        source: &(impl ImageSource + ?Sized),
        stream: Stream<'_>,
        sink: impl FnMut(Rows) -> Result<()>,
    ) -> Result<()> {
        self.ready()?.stream(source, stream, sink)
    }

    /// Raw CLS embeddings of the eval transform (no setup needed).
    pub(crate) fn embed(&self, source: &(impl ImageSource + ?Sized)) -> Result<Vec<f32>> {
        match self.stage()? {
            Stage::Unprepared(u) => u.embed(source),
            Stage::Ready(f) => f.embed(source),
        }
    }
}

/// The facade on one backend.
pub(crate) enum Engine {
    /// flex (CPU).
    Cpu(Slot<FlexB>),
    /// CUDA.
    #[cfg(feature = "cuda")]
    Cuda(Slot<CudaB>),
}

/// Runs `$body` with `$slot` bound to the engine's [`Slot`], whatever its backend.
macro_rules! with_slot {
    ($engine:expr, $slot:ident => $body:expr) => {
        match $engine {
            $crate::engine::Engine::Cpu($slot) => $body,
            #[cfg(feature = "cuda")]
            $crate::engine::Engine::Cuda($slot) => $body,
        }
    };
}
pub(crate) use with_slot;

/// Why an engine could not start.
pub(crate) enum StartError {
    /// The device cannot be used here (driver, build): `RuntimeError`.
    Device(String),
    /// A library error (weights, settings): `ValueError` / `FileNotFoundError`.
    Library(Error),
}

impl From<Error> for StartError {
    fn from(e: Error) -> Self {
        Self::Library(e)
    }
}

impl StartError {
    /// CUDA device `index`, after the driver / NVRTC / headers preflight.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_device(
        index: usize,
    ) -> std::result::Result<burn::backend::cuda::CudaDevice, Self> {
        #[cfg(unix)]
        fungi::cuda::preflight(index).map_err(|e| Self::Device(e.to_string()))?;
        Ok(burn::backend::cuda::CudaDevice::new(index))
    }

    /// CUDA device `index` asked of a build without the `cuda` feature.
    #[cfg(not(feature = "cuda"))]
    pub(crate) fn no_cuda(index: usize) -> Self {
        Self::Device(format!(
            "device \"cuda:{index}\": this build of fungi_rs has no CUDA backend (built without \
             the `cuda` feature); use device=\"cpu\" or install a wheel built with it"
        ))
    }
}

impl Engine {
    /// The facade on `device`: flex, or CUDA after the driver / NVRTC / headers preflight.
    pub(crate) fn start(
        device: DeviceKind,
        arch: &VitConfig,
        weights: Weights,
        config: FungiConfig,
        use_fp16: bool,
    ) -> std::result::Result<Self, StartError> {
        match device {
            DeviceKind::Cpu => {
                if use_fp16 {
                    return Err(StartError::Library(Error::Config {
                        key: "use_fp16".into(),
                        value: "True".into(),
                        expected:
                            "False on the CPU: half precision runs on CUDA (device=\"cuda\"), \
                                   where it is fungivision's bf16 autocast; the CPU computes in f32"
                                .into(),
                    }));
                }
                Ok(Self::Cpu(Slot::build(
                    &Default::default(),
                    arch,
                    weights,
                    config,
                    Precision::F32,
                )?))
            }
            DeviceKind::Cuda(index) => Self::start_cuda(index, arch, weights, config, use_fp16),
        }
    }

    #[cfg(feature = "cuda")]
    fn start_cuda(
        index: usize,
        arch: &VitConfig,
        weights: Weights,
        config: FungiConfig,
        use_fp16: bool,
    ) -> std::result::Result<Self, StartError> {
        let device = StartError::cuda_device(index)?;
        let precision = if use_fp16 {
            Precision::Bf16
        } else {
            Precision::F32
        };
        Ok(Self::Cuda(Slot::build(
            &device, arch, weights, config, precision,
        )?))
    }

    #[cfg(not(feature = "cuda"))]
    fn start_cuda(
        index: usize,
        _arch: &VitConfig,
        _weights: Weights,
        _config: FungiConfig,
        _use_fp16: bool,
    ) -> std::result::Result<Self, StartError> {
        Err(StartError::no_cuda(index))
    }
}

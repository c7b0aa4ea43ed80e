"""The package's default config: every field jaxdiff reads, with its default and what it means.

Sections: model, data, diffusion, train, optim, ema, sample, eval. Every config starts from
`get_config()` here (`from jaxdiff.configs import default`) and overrides what differs; a
workdir's config.json is overlaid on it when loaded (`jaxdiff.config_utils.from_json`), so the
training, data and sampling code can rely on every field existing. Override any field from the
command line: `--config.train.batch_size=256`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Every field with its default and a comment. One long function on purpose: the whole schema
  reads top to bottom in one place, as the config files that override it do."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  # ---- network (jaxdiff.models.create_model) ----
  m = config.model = ml_collections.ConfigDict()
  m.name = "unet"  # "unet" | "mlp" | "dit"
  m.base_channels = 64  # channels of the first level
  m.channel_mult = (1, 2, 2)  # channels per level = base_channels * mult
  m.num_res_blocks = 2  # residual blocks per level (decoder uses num_res_blocks + 1)
  m.attention_resolutions = (16,)  # spatial sizes (pixels) that get self-attention
  m.linear_attention_resolutions = ()  # spatial sizes that get linear attention instead
  m.num_heads = 4  # attention heads (ignored when head_dim > 0)
  m.head_dim = -1  # channels per head; > 0 overrides num_heads
  m.dropout = 0.0  # dropout inside residual blocks (train only)
  m.resblock_updown = False  # down/up-sample with residual blocks instead of convs
  m.conv_resample = True  # strided conv / conv after nearest upsampling (else pool / plain)
  m.use_scale_shift_norm = False  # FiLM (scale, shift) time conditioning instead of addition
  m.num_groups = 32  # GroupNorm groups (reduced automatically to divide channels)
  m.in_channels = -1  # image channels in; -1: config.data.channels
  m.out_channels = -1  # -1: same as in_channels
  m.learn_sigma = False  # output 2x channels (improved-DDPM learned variance)
  m.num_classes = 0  # 0: unconditional; else labels 0..num_classes-1, label num_classes = null
  m.self_condition = False  # extra x_self_cond input concatenated on channels
  m.dtype = "float32"  # compute dtype ("bfloat16" on accelerators)
  m.param_dtype = "float32"
  m.remat = False  # jax.checkpoint each block (memory for compute)
  m.attention_impl = "auto"  # "auto" (cuDNN fused kernel on GPU in bf16/fp16, else XLA) | "xla" | "cudnn"
  m.context_dim = 0  # > 0: cross-attention to a context [B, L, context_dim] (transformer blocks
  #   at attention_resolutions and in the middle)
  m.context_vocab = 0  # > 0: the context is int tokens [B, L] (< 0 = padding) embedded in the model
  m.context_null = "learned"  # null context for guidance / context dropout: "learned" tokens | "zeros"
  m.context_null_length = 1  # tokens of the null context
  m.transformer_ff_mult = 4  # GEGLU feed-forward width (x channels) in the transformer blocks
  m.cond_channels = 0  # > 0: x_cond images with this many channels concatenated to the input
  # MLP (2-D data)
  m.hidden_dim = 128
  m.num_layers = 4  # residual MLP blocks
  m.time_embedding = "sinusoidal"  # "sinusoidal" | "fourier" | "learned" (MLP, process "vp" only)
  m.data_dim = 2
  # how the process time enters the time embedding: "auto" (by diffusion.process: vp -> "index",
  # vpsde / cosine / flow -> "unit" (1000 t), edm -> "log_sigma" (EDM's c_noise = ln(sigma)/4))
  m.time_input = "auto"
  m.fourier_scale = 16.0  # std of the fixed frequencies of time_embedding="fourier"
  m.second_time = False  # a two-time network model_fn(x, t, r=r) for one-step models (few_step)
  # DiT (name="dit", jaxdiff.models.dit; also reads num_heads, num_classes, learn_sigma, context_*,
  # attention_impl, dtype, remat, time_input / time_embedding)
  m.dit_variant = ""  # "S/2" ... "XL/8" (sizes S, B, L, XL x patch 2, 4, 8): sets patch_size,
  #   hidden_size, depth, num_heads (fields left at their defaults); "" = those fields as given
  m.patch_size = 2  # p x p patches (must divide data.image_size): (image_size / p)^2 tokens
  m.hidden_size = 384  # token width (divisible by num_heads and by 4)
  m.depth = 12  # adaLN-Zero transformer blocks
  m.mlp_ratio = 4.0  # MLP width = mlp_ratio x hidden_size
  # UNet layout options of diffusers' UNet2DModel (jaxdiff.interop); the defaults are jaxdiff's own
  m.attention_levels = ()  # levels (0-based) whose blocks get self-attention, besides attention_resolutions
  m.mid_attention = True  # attention in the middle block (diffusers' add_attention)
  m.mid_attention_norm = True  # GroupNorm before it (diffusers: none with time scale_shift)
  m.norm_eps = 1e-6  # epsilon of every GroupNorm (diffusers' norm_eps)
  m.flip_sin_to_cos = False  # sinusoidal time embedding: [cos, sin] instead of [sin, cos]
  m.freq_shift = 1.0  # sinusoid frequencies exp(-ln(10^4) i / (dim/2 - freq_shift)); DDPM: 1
  m.downsample_padding = 1  # strided-conv downsampling: 1 = pad 1 all round | 0 = bottom/right only (DDPM)
  m.time_embed_dim = -1  # width of the time-embedding MLP; -1: 4 * base_channels

  # ---- data (jaxdiff.data) ----
  d = config.data = ml_collections.ConfigDict()
  d.name = "digits"  # "digits" | "toy2d/<s_curve|swiss_roll|moons|8gaussians|checkerboard>" | "tfds/<name>"
  d.image_size = 8  # height = width of model input (images)
  d.channels = 1
  d.num_classes = 10  # labels in the data set (0: none; toy2d: 0, or 2 for moons, 8 for 8gaussians)
  d.data_dir = ""  # TFDS data_dir (local path or gs://...); "" = TFDS default
  d.split = "train"  # digits: "train" (1438) | "test" (359 held out) | "all"; TFDS: any split spec
  d.random_flip = False  # random horizontal flip (never for digits)
  d.center_crop = False  # centre square crop before resizing (CelebA)
  d.shuffle_buffer = 10_000
  d.toy2d_num_points = 0  # 0: endless stream of fresh points; > 0: fixed set from the seed
  d.cond = ""  # "" | "sr" (batch gains x_cond: bicubic of the sr_factor-downsampled image)
  #   | "caption" (batch gains context: digit captions; jaxdiff.data.captions)
  d.sr_factor = 2  # "sr": downsampling factor (8x8 digits -> 4x4)

  # ---- diffusion process and loss (jaxdiff.processes / jaxdiff.schedules / jaxdiff.diffusion) ----
  f = config.diffusion = ml_collections.ConfigDict()
  f.process = "vp"  # "vp" (the discrete chain of `schedule`) | "vpsde" | "cosine" | "edm" | "flow"
  f.schedule = "linear"  # "vp": "linear" | "cosine" | "sigmoid" | "quadratic"
  f.num_timesteps = 1000
  f.beta_start = 1e-4
  f.beta_end = 0.02
  f.rescale_zero_terminal_snr = False
  f.vpsde_beta_min = 0.1  # "vpsde": score_sde's beta(t) = beta_min + t (beta_max - beta_min)
  f.vpsde_beta_max = 20.0
  f.t_min = 1e-3  # "vpsde": smallest time of sampling grids and training draws
  f.cosine_shift = 1.0  # "cosine": log-SNR shift (simple diffusion: 64 / resolution)
  f.sigma_data = 0.5  # "edm" (and prediction="edm" on any process): the data's std
  f.sigma_min = 0.002  # "edm": the sampling grid's ends
  f.sigma_max = 80.0
  f.rho = 7.0  # "edm": Karras grid exponent
  f.p_mean = -1.2  # "edm": training draws ln(sigma) ~ N(p_mean, p_std^2)
  f.p_std = 1.2
  f.flow_shift = 1.0  # "flow": SD3's shift of the default sampling grid (grids.flow)
  f.time_sampling = ""  # "": the process's own (uniform; EDM log-normal) | "uniform" | "logit_normal"
  f.logit_mean = 0.0  # "flow" with time_sampling="logit_normal": t = sigmoid(N(m, s^2)) (SD3: 0, 1)
  f.logit_std = 1.0
  f.prediction = "eps"  # what the network predicts: "eps" | "x0" | "v" | "flow" (eps - x0) | "edm" (F)
  f.loss_type = "l2"  # "l2" | "l1" | "huber"
  f.weighting = "none"  # "none" | "p2" | "min_snr" | "edm" (lambda(sigma) of Karras et al.)
  f.min_snr_gamma = 5.0
  f.p2_gamma = 1.0
  f.p2_k = 1.0
  f.offset_noise = 0.0

  # ---- training loop (jaxdiff.training) ----
  t = config.train = ml_collections.ConfigDict()
  t.batch_size = 128  # global batch over all devices and processes
  t.num_steps = 10_000
  t.log_every = 100
  t.checkpoint_every = 1000
  t.keep_checkpoints = 3
  # "": WORKDIR/checkpoints. Else where Orbax keeps the checkpoints (a local folder or gs://), for a
  # workdir on a store Orbax cannot write (s3://, memory://: jaxdiff's own files go anywhere fsspec does)
  t.checkpoint_dir = ""
  t.sample_every = 1000  # 0 disables periodic sample grids
  t.num_sample_images = 64  # images in each periodic grid
  t.label_dropout = 0.1  # classifier-free guidance: share of labels replaced by the null class
  t.context_dropout = -1.0  # share of contexts replaced by the null context; < 0: label_dropout
  t.steps_per_dispatch = 1  # train steps scanned in one compiled call
  t.grad_accum_steps = 1  # optax.MultiSteps accumulation
  t.nan_policy = "stop"  # "stop" | "skip" on a non-finite loss
  t.max_skipped_steps = 20  # nan_policy "skip": stop (naming the step) once more updates than this were
  #   skipped since the run started or resumed; a run that skips that many is diverging, not unlucky
  t.compilation_cache_dir = ""  # "" = ~/.cache/jaxdiff/xla; "none" disables

  # ---- parallelism (jaxdiff.parallel): a ("data", "fsdp") mesh over every device ----
  p = config.parallel = ml_collections.ConfigDict()
  p.fsdp = 1  # devices sharing one copy of params / optimizer state / EMA (1 = pure data parallel);
  #   must divide the device count; the data axis takes the rest
  p.fsdp_min_size = 1024  # arrays with fewer elements stay replicated under fsdp > 1

  # ---- optimizer (optax) ----
  o = config.optim = ml_collections.ConfigDict()
  o.optimizer = "adam"  # "adam" | "adamw"
  o.learning_rate = 2e-4
  o.weight_decay = 0.0
  o.b1 = 0.9
  o.b2 = 0.999
  o.eps = 1e-8
  o.warmup_steps = 500
  o.schedule = "constant"  # "constant" | "cosine" (decays to 0 at train.num_steps)
  o.grad_clip = 1.0  # global-norm clipping; 0 disables

  # ---- EMA of parameters ----
  e = config.ema = ml_collections.ConfigDict()
  e.decay = 0.9999
  e.warmup = True  # decay = min(decay, (1 + step) / (10 + step))

  # ---- sampling defaults (sample.py and periodic grids) ----
  s = config.sample = ml_collections.ConfigDict()
  s.sampler = "ddim"  # any of jaxdiff.samplers.SAMPLERS: ddpm, ddim, dpmpp_2m, dpmpp_3m, dpmpp_2m_sde,
  #   unipc, euler, euler_ancestral, heun
  s.num_steps = 50
  s.eta = 0.0
  s.spacing = "leading"  # "vp" chains: "leading" | "trailing" | "linspace"
  s.grid = ""  # "": the process's own (vp: `spacing`; edm: karras; flow: flow; vpsde/cosine: uniform)
  #   | "karras" | "logsnr" | "uniform" | "flow" | "leading" | "trailing" | "linspace"
  s.rho = 7.0  # grid="karras"
  s.shift = -1.0  # grid="flow": SD3 shift; < 0: diffusion.flow_shift
  s.sigma_min = -1.0  # grid="karras": sigma/alpha ends; < 0: diffusion.sigma_min / sigma_max (edm)
  s.sigma_max = -1.0  #   or the process's own ends
  s.order = 2  # unipc: 2 | 3
  s.s_churn = 0.0  # euler / heun: EDM's stochastic churn
  s.guidance_scale = 1.0  # classifier-free guidance scale (1 = plain conditional)
  s.guidance_rescale = 0.0  # guidance rescale phi in [0, 1] (Lin et al. 2024), model-output space; 0 = off
  s.guidance_interval = ""  # "lo,hi" in the process's time: guidance only there (Kynkaanniemi et al.
  #   2024), plain conditional elsewhere; "" = at every step
  s.guidance_schedule = ""  # a scale per step instead of guidance_scale: "linear:a,b" | "cosine:a,b" |
  #   "s1,s2,...,sn" (num_steps scales, the noisiest step first); "" = guidance_scale at every step
  s.clip_x0 = 1.0  # clip predicted x0 to [-c, c]; 0 disables
  s.clipped_eps = True  # ddim with clip_x0: eps from the clipped x0 (False: the model's own, DDIMPipeline's)
  s.batch_size = 256

  # ---- one- and two-step models (jaxdiff.few_step) ----
  fs = config.few_step = ml_collections.ConfigDict()
  fs.method = ""  # "" (the diffusion loss; "meanflow" with prediction "mean_velocity") | "meanflow" |
  #   "shortcut" (both: model.second_time, prediction "mean_velocity") | "consistency"
  fs.ratio = 0.25  # meanflow: share of the batch with r < t (the rest r = t: flow matching)
  fs.logit_mean = -0.4  # meanflow: (r, t) drawn logit-normal(m, s), t the larger
  fs.logit_std = 1.0
  fs.adaptive_p = 1.0  # meanflow: adaptive loss weight 1 / (err + c)^p (0: plain L2)
  fs.adaptive_c = 1e-3
  fs.velocity = "sample"  # meanflow: du/dt along "sample" (eps - x0) | "model" (its own u(x, t, t))
  fs.omega = 1.0  # meanflow: guidance folded into training (omega, kappa; 1, 0 = none)
  fs.kappa = 0.0
  fs.fraction = 0.25  # shortcut: share of the batch with self-consistency targets
  fs.max_log2 = 7  # shortcut: smallest step size 2^-max_log2
  fs.delta_start = 0.5  # consistency: the relative noise-level gap of (t, r), annealed geometrically
  fs.delta_end = 0.02  #   from start to end over train.num_steps (ECT)
  fs.huber_c = 0.03  # consistency: pseudo-Huber constant
  ds = config.distill = ml_collections.ConfigDict()
  ds.teacher = ""  # consistency distillation: a trained run's workdir (its EMA weights, frozen)
  ds.sampler = "euler"  # the teacher's ODE step: a deterministic sampler (euler, heun, ddim, dpmpp_2m)

  # ---- autoencoders (model.name "autoencoder_kl") and latent diffusion (jaxdiff.latents) ----
  ae = config.autoencoder = ml_collections.ConfigDict()
  ae.block_out_channels = (64, 128)  # one entry per level; 2^(levels - 1) x smaller latents
  ae.layers_per_block = 1
  ae.latent_channels = 4
  ae.norm_num_groups = 32
  ae.mid_block_add_attention = True
  ae.recon_loss = "l1"  # "l1" | "l2"
  ae.kl_weight = 1e-6  # beta of beta * KL(q(z|x) || N(0, I)), the KL summed over the latent
  ae.perceptual = ""  # a name in jaxdiff.training.autoencoder_step.PERCEPTUAL_LOSSES (e.g. your LPIPS)
  ae.perceptual_weight = 0.0
  ae.scaling_factor = 0.0  # 0: 1 / std of the training latents, measured when training ends
  ae.shift_factor = 0.0
  lt = config.latent = ml_collections.ConfigDict()
  lt.vae = ""  # diffusion in this autoencoder's latents: a diffusers AutoencoderKL folder or an
  #   autoencoder workdir ("" = pixel space); data: an encoded set (data.name "latents")
  lt.decode_batch_size = 64  # latents decoded per call (memory bound for large batches)

  # ---- evaluation ----
  v = config.eval = ml_collections.ConfigDict()
  v.every = 0  # 0 disables periodic evaluation (figures go to TensorBoard / metrics.jsonl)
  v.num_samples = 1000  # samples per periodic evaluation
  v.inception_weights = ""  # FID on TFDS data: local Inception weights file (see README, Evaluation)
  v.fid_stats = ""  # FID on TFDS data: reference statistics .npz (jaxdiff.evaluation.fid_stats)
  return config

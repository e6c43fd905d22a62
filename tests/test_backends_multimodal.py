"""Video-LLaVA and LLaVA backends on tiny hub-layout checkpoints (save_pretrained + tokenizer):
pixels equal to transformers' own processors (PIL backend, no torchvision), placeholder counts, prompt
ids, image modes, cache, left-padded batches. Tiny sizes: Llama hidden 32 x 2 layers; CLIP 32 px,
patch 8 -> 16 patches (+ CLS). The published-layout checkpoints carry the real models' verbatim
preprocessor/processor files (tests/data/checkpoints/, PROVENANCE.md there) at the real image sizes
(224 / 336 px, patch 14) with tiny weights."""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import left_pad_rows
from PIL import Image

torch.set_num_threads(1)

from transformers import (  # noqa: E402
    AutoImageProcessor,
    AutoProcessor,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    VideoLlavaConfig,
    VideoLlavaForConditionalGeneration,
    VideoLlavaImageProcessor,
)
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil  # noqa: E402

from specalign.backends.common import load_image_processor, tile_grid  # noqa: E402
from specalign.backends.llava import LlavaBackend  # noqa: E402
from specalign.backends.video_llava import VideoLlavaBackend, load_frame_processor  # noqa: E402
from specalign.dataset import Sample  # noqa: E402
from specalign.demo_tokenizer import add_target_tokens, build_backend, wrap  # noqa: E402
from specalign.specs import ModelSpec  # noqa: E402
from specalign.video import uniform_frame_indices  # noqa: E402

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              image_size=32, patch_size=8, initializer_range=0.2)
PATCHES = (32 // 8) ** 2  # 16
QUESTIONS = ("What is in the scene?", "Describe the road and the cars in this scene in detail please.")
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
DATA = Path(__file__).parent / "data"
PUBLISHED = DATA / "checkpoints"  # verbatim processor files of the published checkpoints
LLAVA_VOCAB = DATA / "vocab" / "llava-1.5-7b-hf"  # llava-1.5-7b-hf's tokenizer (tests/data/vocab/PROVENANCE.md)
LLAVA_TOKENIZER_JSON_SHA256 = "30e1294abd835edfebb24618fce6f47c21ffb2b2802520d150bdee0b808b47cb"


@pytest.fixture(scope="module")
def tok():
    texts = [*QUESTIONS, "USER: ASSISTANT:", "a red circle moves left", "a blue square moves up"]
    return add_target_tokens(wrap(build_backend(texts, 400)))


def _text_config(tok):
    return LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, initializer_range=0.2, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


def _ids(tok):
    return dict(image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1)


@pytest.fixture(scope="module")
def video_dir(tok, tmp_path_factory):
    torch.manual_seed(0)
    cfg = VideoLlavaConfig(vision_config=CLIPVisionConfig(**VISION), text_config=_text_config(tok),
                           video_token_index=tok.convert_tokens_to_ids("<video>"),
                           vision_feature_select_strategy="default", **_ids(tok))
    path = tmp_path_factory.mktemp("vl") / "video_llava"
    VideoLlavaForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    # the checkpoint's own preprocessing numbers (as Video-LLaVA-7B-hf ships a preprocessor_config.json)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                          image_mean=list(MEAN), image_std=list(STD)).save_pretrained(path)
    return path


def _llava_dir(tok, root, strategy):
    torch.manual_seed(1)
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**VISION), text_config=_text_config(tok),
                      vision_feature_select_strategy=strategy, image_seq_length=PATCHES, **_ids(tok))
    path = root / f"llava_{strategy}"
    LlavaForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llava_dir(tok, tmp_path_factory):
    return _llava_dir(tok, tmp_path_factory.mktemp("llava"), "default")


@pytest.fixture(scope="module")
def vbackend(video_dir):
    return VideoLlavaBackend(ModelSpec(name="target", family="video_llava", path=str(video_dir)))


@pytest.fixture(scope="module")
def lbackend(llava_dir):
    return LlavaBackend(ModelSpec(name="llava", family="llava", path=str(llava_dir)))


def _frames(seed=0, n=8, h=24, w=32):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]




def _hf_pixels(processor, images):
    """What a transformers image processor itself returns for these images (float32 [k, 3, h, w])."""
    kw = {"return_legacy_image_output": False} if isinstance(processor, VideoLlavaImageProcessor) else {}
    return processor(images=images, return_tensors="pt", **kw)["pixel_values"]


# --------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("hw", [(24, 40), (50, 30), (32, 32)])
def test_pixels_equal_the_checkpoints_own_processor(hw, vbackend, video_dir, lbackend, llava_dir, tmp_path):
    """Every pixel path is the checkpoint's processor as AutoImageProcessor loads it, bit for bit."""
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(8)]
    ref = AutoImageProcessor.from_pretrained(video_dir)
    assert torch.equal(vbackend.pixel_values_videos(frames)[0], _hf_pixels(ref, frames))
    # no preprocessor_config.json: CLIP defaults at the tower size
    ref = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    assert torch.equal(lbackend.pixel_values(frames)[0], _hf_pixels(ref, [frames[4]])[0])
    # LLaVA's pad-to-square (mean colour) variant: a checkpoint whose config names LlavaImageProcessor, do_pad
    padded = tmp_path / "llava_pad"
    shutil.copytree(llava_dir, padded)
    LlavaImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_pad=True,
                           image_mean=list(MEAN), image_std=list(STD)).save_pretrained(padded)
    pb = LlavaBackend(ModelSpec(name="p", family="llava", path=str(padded)))
    assert type(pb.image_processor) is LlavaImageProcessorPil and pb.image_processor.do_pad
    got = pb.pixel_values(frames)[0]
    assert torch.equal(got, _hf_pixels(AutoImageProcessor.from_pretrained(padded), [frames[4]])[0])
    if hw[0] != hw[1]:  # padding changes a non-square image
        unpadded = LlavaImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                          image_mean=list(MEAN), image_std=list(STD))
        assert not torch.allclose(got, _hf_pixels(unpadded, [frames[4]])[0], atol=1e-3)


def test_preprocess_defaults_and_size_check(tmp_path):
    pre = load_image_processor(tmp_path, 32, CLIPImageProcessorPil)  # no config: CLIP defaults at the tower size
    assert type(pre) is CLIPImageProcessorPil
    assert (pre.crop_size["height"], pre.crop_size["width"]) == (32, 32) and pre.size["shortest_edge"] == 32
    assert pre.do_center_crop and pre.resample == 3
    assert list(pre.image_mean) == [0.48145466, 0.4578275, 0.40821073]
    CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="vision tower"):
        load_image_processor(tmp_path, 32, CLIPImageProcessorPil)
    # no crop and a shortest-edge resize: no fixed output size
    CLIPImageProcessorPil(size={"shortest_edge": 32}, do_center_crop=False).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="vision tower"):
        load_image_processor(tmp_path, 32, CLIPImageProcessorPil)


def test_video_preprocessor_config_takes_precedence(tmp_path):
    """A video_preprocessor_config.json (what transformers 5 saves for VideoLlavaVideoProcessor) gives its
    numbers to the PIL frame processor; without one, preprocessor_config.json; without both, defaults."""
    assert type(load_frame_processor(tmp_path, 32)) is VideoLlavaImageProcessor
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                          image_mean=list(MEAN), image_std=list(STD)).save_pretrained(tmp_path)
    assert list(load_frame_processor(tmp_path, 32).image_mean) == list(MEAN)
    video_mean = [0.1, 0.2, 0.3]
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps({
        "video_processor_type": "VideoLlavaVideoProcessor", "processor_class": "VideoLlavaProcessor",
        "do_sample_frames": False, "default_to_square": False, "do_resize": True, "size": {"shortest_edge": 32},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": video_mean, "image_std": list(STD),
        "do_convert_rgb": True}))
    proc = load_frame_processor(tmp_path, 32)
    assert type(proc) is VideoLlavaImageProcessor and list(proc.image_mean) == video_mean
    frames = _frames(4)
    want = VideoLlavaImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                    image_mean=video_mean, image_std=list(STD))
    assert torch.equal(_hf_pixels(proc, frames), _hf_pixels(want, frames))
    with pytest.raises(ValueError, match="vision tower"):
        load_frame_processor(tmp_path, 64)


# --------------------------------------------------------------------------- published processor files
def _published_vision(**kw):
    """Tiny widths/depths; patch size and image size as published (Video-LLaVA's vision_config has no
    image_size key: CLIPVisionConfig's 224)."""
    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            patch_size=14, initializer_range=0.2, **kw)


def _dsec_frames(seed, n=8, h=480, w=640):
    """DSEC-sized frames: noise plus a smooth gradient (resampling differences show on both)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx // 7 + yy // 5) * 37 % 256], -1).astype(np.uint8)
    return [smooth] + [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n - 1)]


def test_video_llava_published_preprocessor(tok, tmp_path):
    """LanguageBind/Video-LLaVA-7B-hf's verbatim preprocessor_config.json (VideoLlavaImageProcessor, 224 px):
    the backend's pixel_values_videos equal what AutoImageProcessor.from_pretrained(checkpoint) gives for the
    same 8 frames. VideoLlavaVideoProcessor (what AutoVideoProcessor / AutoProcessor would use) needs
    torchvision in transformers 5, which is not installed; CLIPImageProcessorPil (EventGPT's class) on the
    same file gives the same pixels bit for bit."""
    torch.manual_seed(0)
    cfg = VideoLlavaConfig(vision_config=_published_vision(), text_config=_text_config(tok),
                           video_token_index=tok.convert_tokens_to_ids("<video>"),
                           vision_feature_select_strategy="default", **_ids(tok))
    assert cfg.vision_config.image_size == 224
    path = tmp_path / "video_llava_published"
    VideoLlavaForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    shutil.copy(PUBLISHED / "Video-LLaVA-7B-hf" / "preprocessor_config.json", path)
    b = VideoLlavaBackend(ModelSpec(name="target", family="video_llava", path=str(path)))
    assert type(b.image_processor) is VideoLlavaImageProcessor
    assert b.num_visual_tokens == 8 * ((224 // 14) ** 2 + 1) == 2056  # the 7B model's count
    frames = _dsec_frames(7)
    pv = b.prepare_frames("s", QUESTIONS[0], frames).model_inputs["pixel_values_videos"]
    assert pv.shape == (1, 8, 3, 224, 224) and pv.dtype == torch.float32
    ref = AutoImageProcessor.from_pretrained(path)
    assert type(ref) is VideoLlavaImageProcessor
    assert torch.equal(pv[0], _hf_pixels(ref, frames))
    assert torch.equal(pv[0], _hf_pixels(CLIPImageProcessorPil.from_pretrained(path), frames))


@pytest.fixture(scope="module")
def llava_published(tmp_path_factory):
    """A tiny LLaVA in llava-hf/llava-1.5-7b-hf's layout: its verbatim preprocessor_config.json and
    processor_config.json, its own tokenizer files, config ids as published (<image> 32000, <pad> 32001,
    vocab 32064, vision 336 px / patch 14, feature layer -2, strategy "default")."""
    path = tmp_path_factory.mktemp("llava_published")
    raw = gzip.decompress((LLAVA_VOCAB / "tokenizer.json.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == LLAVA_TOKENIZER_JSON_SHA256
    (path / "tokenizer.json").write_bytes(raw)
    for f in [*LLAVA_VOCAB.glob("*.json"), *(PUBLISHED / "llava-1.5-7b-hf").glob("*.json")]:
        shutil.copy(f, path / f.name)
    torch.manual_seed(2)
    text = LlamaConfig(vocab_size=32064, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, initializer_range=0.2, pad_token_id=32001, bos_token_id=1, eos_token_id=2)
    cfg = LlavaConfig(vision_config=_published_vision(image_size=336), text_config=text, image_token_index=32000,
                      vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=576)
    LlavaForConditionalGeneration(cfg).save_pretrained(path)
    return path


def test_llava_published_processor(llava_published):
    """AutoProcessor.from_pretrained(checkpoint) (LlavaProcessor with CLIPImageProcessorPil, the class the
    published preprocessor_config.json names; it has no do_pad, so no pad to square) gives the same
    pixel_values and input_ids as the backend, in every image mode."""
    proc = AutoProcessor.from_pretrained(llava_published)
    assert type(proc.image_processor) is CLIPImageProcessorPil and not getattr(proc.image_processor, "do_pad", None)
    frames = _dsec_frames(8, h=240, w=320)
    be = {mode: LlavaBackend(ModelSpec(name=mode, family="llava", path=str(llava_published), options=opts))
          for mode, opts in [("middle", ()), ("crop", (("image_mode", "grid"),)),
                             ("stretch", (("image_mode", "grid"), ("grid_resize", "stretch")))]}
    b = be["middle"]
    assert type(b.image_processor) is CLIPImageProcessorPil and b.image_processor.to_dict() == proc.image_processor.to_dict()
    assert b.num_visual_tokens == 576 and b.image_token_id == 32000
    pi = b.prepare_frames("s", QUESTIONS[1], frames)
    out = proc(images=frames[4], text=pi.prompt_text, return_tensors="pt")
    assert pi.model_inputs["pixel_values"].shape == (1, 3, 336, 336)
    assert torch.equal(pi.model_inputs["pixel_values"], out["pixel_values"])
    assert pi.input_ids.tolist() == out["input_ids"][0].tolist()  # <image> -> 576 ids, BOS first
    # grid, crop: the processor's own behaviour on the tiled image
    tiled = tile_grid(frames, 2, 4)
    assert torch.equal(be["crop"].pixel_values(frames), proc(images=tiled, text=pi.prompt_text,
                                                             return_tensors="pt")["pixel_values"])
    # grid, stretch: the same processor configured to resize to 336 x 336 without a crop
    stretch = AutoImageProcessor.from_pretrained(llava_published, size={"height": 336, "width": 336},
                                                 do_center_crop=False)
    got = be["stretch"].pixel_values(frames)
    assert torch.equal(got, _hf_pixels(stretch, [tiled]))
    assert be["stretch"].grid_processor.to_dict() == stretch.to_dict()
    assert not torch.allclose(got, be["crop"].pixel_values(frames), atol=1e-3)


# --------------------------------------------------------------------------- Video-LLaVA
def test_video_llava_prompt_and_counts(vbackend, tok):
    b = vbackend
    assert b.num_visual_tokens == 8 * (PATCHES + 1) == 136
    assert list(b.image_processor.image_mean) == list(MEAN)  # read from the checkpoint's preprocessor_config.json
    ids, text = b.prompt_ids(QUESTIONS[0])
    assert text == "USER: <video>\nWhat is in the scene? ASSISTANT:"
    vid = tok.convert_tokens_to_ids("<video>")
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids.count(vid) == 136
    # what the HF processor does: the text with <video> written out 136 times, tokenised whole
    assert ids == tok(text.replace("<video>", "<video>" * 136)).input_ids
    assert (b.eos_token_id, b.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)


def test_video_llava_features_match_placeholders(vbackend):
    b = vbackend
    frames = _frames(0)
    pi = b.prepare_frames("s", QUESTIONS[0], frames)
    pv = pi.model_inputs["pixel_values_videos"]
    assert pv.shape == (1, 8, 3, 32, 32) and pv.dtype == torch.float32
    want = torch.stack([CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                              image_mean=list(MEAN), image_std=list(STD))(
        images=f, return_tensors="pt")["pixel_values"][0] for f in frames])
    assert torch.allclose(pv[0], want, atol=1e-5)
    with torch.no_grad():
        feats = b.model.model.get_video_features(pixel_values_videos=pv).pooler_output
    assert feats.flatten(0, 1).shape[0] == b.num_visual_tokens
    logits = b.forward(pi.input_ids[None], model_inputs=pi.model_inputs)
    assert logits.shape == (1, pi.input_ids.shape[0], b.text_vocab_size) and torch.isfinite(logits).all()


def test_video_llava_cache_and_batch(vbackend):
    b = vbackend
    pis = [b.prepare_frames(f"s{i}", q, _frames(i)) for i, q in enumerate(QUESTIONS)]
    # prefill + decode steps (pixels only in the prefill) == one full pass
    ids = pis[0].input_ids[None]
    full = b.forward(ids, model_inputs=pis[0].model_inputs)
    cache = b.new_cache()
    b.forward(ids[:, :-2], cache=cache, model_inputs=pis[0].model_inputs)
    s1 = b.forward(ids[:, -2:-1], cache=cache)
    s2 = b.forward(ids[:, -1:], cache=cache)
    assert torch.allclose(s1[0, -1], full[0, -2], atol=1e-5) and torch.allclose(s2[0, -1], full[0, -1], atol=1e-5)
    # left-padded batch == one by one
    bids, mask, pos = left_pad_rows([p.input_ids for p in pis], b.pad_token_id)
    batch = b.forward(bids, attention_mask=mask, position_ids=pos, model_inputs={
        "pixel_values_videos": torch.cat([p.model_inputs["pixel_values_videos"] for p in pis])})
    for i, p in enumerate(pis):
        one = b.forward(p.input_ids[None], model_inputs=p.model_inputs)[0]
        assert torch.allclose(batch[i, -p.input_ids.shape[0]:], one, atol=1e-4), i


def test_video_llava_prepare_from_png_folder(vbackend, tmp_path):
    frames = _frames(5, n=11, h=30, w=40)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"{i:06d}.png")
    s = Sample(sample_id="seq/000001", question=QUESTIONS[1], video_dir=tmp_path)
    pi = vbackend.prepare(s)
    chosen = [frames[i] for i in uniform_frame_indices(11, 8)]
    assert torch.equal(pi.model_inputs["pixel_values_videos"][0], _hf_pixels(vbackend.image_processor, chosen))
    assert pi.input_ids.tolist() == vbackend.prompt_ids(QUESTIONS[1])[0] and pi.sample_id == "seq/000001"


# --------------------------------------------------------------------------- LLaVA
def test_llava_counts_and_prompt(lbackend, llava_dir, tok, tmp_path):
    b = lbackend
    assert b.num_visual_tokens == PATCHES  # CLS dropped under "default"
    ids, text = b.prompt_ids(QUESTIONS[1])
    assert text == "USER: <image>\n" + QUESTIONS[1] + " ASSISTANT:"
    img = tok.convert_tokens_to_ids("<image>")
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1 and ids.count(img) == PATCHES
    assert ids == tok(text.replace("<image>", "<image>" * PATCHES)).input_ids
    full = LlavaBackend(ModelSpec(name="l", family="llava", path=str(_llava_dir(tok, tmp_path, "full"))))
    assert full.num_visual_tokens == PATCHES + 1  # CLS kept under "full"
    for be in (b, full):
        pi = be.prepare_frames("s", QUESTIONS[0], _frames(1))
        with torch.no_grad():
            feats = be.model.model.get_image_features(pixel_values=pi.model_inputs["pixel_values"]).pooler_output
        assert sum(f.shape[0] for f in feats) == be.num_visual_tokens
        assert torch.isfinite(be.forward(pi.input_ids[None], model_inputs=pi.model_inputs)).all()


def test_llava_image_modes(lbackend, llava_dir):
    frames = _frames(2)  # 24 x 32 (4:3)
    middle = lbackend.pixel_values(frames)
    assert lbackend.image_mode == "middle" and middle.shape == (1, 3, 32, 32)
    assert torch.equal(middle, _hf_pixels(lbackend.image_processor, [frames[4]]))  # frames[len // 2]

    grid_b = LlavaBackend(ModelSpec(name="g", family="llava", path=str(llava_dir), options=(("image_mode", "grid"),)))
    grid = grid_b.pixel_values(frames)
    assert grid.shape == (1, 3, 32, 32)
    tiled = tile_grid(frames, 2, 4)
    assert tiled.shape == (48, 128, 3)
    assert np.array_equal(tiled[24:48, 96:128], frames[7]) and np.array_equal(tiled[0:24, 32:64], frames[1])
    ref = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})(
        images=tiled, return_tensors="pt")["pixel_values"][0]  # resize 48x128 -> 32x85, center crop 32
    assert torch.allclose(grid[0], ref, atol=1e-5)

    st = LlavaBackend(ModelSpec(name="g", family="llava", path=str(llava_dir),
                                options=(("grid_resize", "stretch"), ("image_mode", "grid"))))
    stretched = st.pixel_values(frames)
    want = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})(
        images=np.asarray(Image.fromarray(tiled).resize((32, 32), Image.BICUBIC)), return_tensors="pt")["pixel_values"]
    assert torch.allclose(stretched, want, atol=1e-6)
    assert st.grid_processor.do_center_crop is False and st.image_processor.do_center_crop  # crop kept for "middle"
    with pytest.raises(ValueError, match="image_mode"):
        LlavaBackend(ModelSpec(name="x", family="llava", path=str(llava_dir), options=(("image_mode", "first"),)))


def test_llava_cache_and_batch(lbackend):
    b = lbackend
    pis = [b.prepare_frames(f"s{i}", q, _frames(i + 3)) for i, q in enumerate(QUESTIONS)]
    ids = pis[1].input_ids[None]
    full = b.forward(ids, model_inputs=pis[1].model_inputs)
    cache = b.new_cache()
    b.forward(ids[:, :-1], cache=cache, model_inputs=pis[1].model_inputs)
    step = b.forward(ids[:, -1:], cache=cache)
    assert torch.allclose(step[0, -1], full[0, -1], atol=1e-5)
    bids, mask, pos = left_pad_rows([p.input_ids for p in pis], b.pad_token_id)
    batch = b.forward(bids, attention_mask=mask, position_ids=pos, model_inputs={
        "pixel_values": torch.cat([p.model_inputs["pixel_values"] for p in pis])})
    for i, p in enumerate(pis):
        one = b.forward(p.input_ids[None], model_inputs=p.model_inputs)[0]
        assert torch.allclose(batch[i, -p.input_ids.shape[0]:], one, atol=1e-4), i


@pytest.mark.parametrize("which", ["video_llava", "llava"])
def test_greedy_generation_batched_equals_unbatched(which, vbackend, lbackend):
    """The generation stage's own loop: left-padded batches give the same greedy tokens."""
    from specalign.generation import generate
    from specalign.specs import Decoding

    b = vbackend if which == "video_llava" else lbackend
    pis = [b.prepare_frames(f"s{i}", q, _frames(i)) for i, q in enumerate(QUESTIONS)]
    dec = Decoding("greedy", max_new_tokens=6)
    one = [g.token_ids for g in generate(b, pis, dec, batch_size=1)]
    many = [g.token_ids for g in generate(b, pis, dec, batch_size=len(pis))]
    assert one == many and all(len(t) > 0 for t in one)

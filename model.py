"""Model: ResNet encoder (image -> features) and LSTM decoder (features -> words), greedy and beam decoding, and the
factory that builds both from a config (build_encoder, build_decoder), which every caller uses."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from captioning.backbone import (STAGES, PretrainedWeightsUnavailable, load_backbone, object_classes, object_head_of,
                                 stage_side, zero_init_residual)
from captioning.config import Config
from captioning.runtime import autocast

COUNT_FEATURES = 4  # per cell with objects: how many objects of the cell's pair the image holds (count_features)


def count_features(count: torch.Tensor) -> torch.Tensor:
    """(..., 1) counts -> (..., COUNT_FEATURES): the count, and how close it is to one, two, and three or more (a
    triangle each), which an attention score can match to "two" without learning a bump of its own."""
    return torch.cat([count, (1 - (count - 1).abs()).clamp(min=0), (1 - (count - 2).abs()).clamp(min=0),
                      (count - 2).clamp(0, 1)], dim=-1)


class EncoderCNN(nn.Module):
    """ResNet without its classifier, global-pooled and flattened, then a Linear projection to embed_size.

    With attention, the image is also the cells of layer3's map (attention_stage; or layer4's), each projected to
    embed_size, for the decoder to attend over; the pooled last stage stays the image's summary. An image's features, as the feature cache holds
    them, are then the pooled vector followed by the flattened cells.

    With objects (the synthetic recipe; weights from `pretrain_encoder.py --centres`), the CNN's centre head is read
    too: a 1x1 convolution on layer3's map that the pretraining taught to name, for each cell, the colour-shape pair
    whose object has its centre there. Each cell gets its probabilities (none, then each pair) and how many objects
    of its pair the image holds (count_features), and the pooled vector those counts for every pair: the head's
    probabilities summed over the cells. The head names objects better than a captioner reading layer3's cells alone,
    and a softmax attention cannot count (its weights sum to one whether it finds one red circle or three), hence the
    counts in every cell (docs/EXPERIMENTS.md, 2026-12-02 (late morning)). The head is frozen with
    the backbone, and its outputs are part of what the feature cache holds.
    """

    def __init__(self, embed_size: int, backbone: str = "resnet50", pretrained: str = "auto",
                 train_backbone: str = "auto", weights: str = "DEFAULT", attention: bool = False,
                 objects: int = 0, attention_stage: str = "layer3") -> None:
        """objects: the classes of the centre head (pairs + 1) to read, 0 for none; needs attention over layer3, and
        its weights come from the weights file (pretrained) or the checkpoint (build_models). attention_stage: the
        stage whose cells are attended over, layer3 or layer4."""
        super().__init__()
        if objects and not (attention and attention_stage == "layer3"):
            raise ValueError("the centre head (objects) is read on layer3's cells: it needs attention over layer3")
        if attention_stage not in ("layer3", "layer4"):
            raise ValueError(f"attention_stage must be layer3 or layer4, got {attention_stage!r}")
        resnet, self.pretrained = load_backbone(backbone, pretrained, weights)
        layer3 = resnet.layer4[0].conv1.in_channels  # layer3's channels: 1024 for ResNet-50, 256 for ResNet-18
        self.attention_stage = attention_stage if attention else ""
        self.objects = nn.Conv2d(layer3, objects, kernel_size=1) if objects else None
        if self.objects is not None and self.pretrained:
            found = object_classes(weights)  # PretrainedWeightsUnavailable when the file has no centre head
            if found != objects:
                raise PretrainedWeightsUnavailable(f"the centre head of {weights} names {found} classes, not {objects}")
            self.objects.load_state_dict(object_head_of(weights))
        # The pooled vector (with objects: then each pair's count), and each cell (then its pair probabilities and
        # its pair's count).
        self.feature_size = resnet.fc.in_features + max(objects - 1, 0)  # 2048 for ResNet-50
        channels = layer3 if attention_stage == "layer3" else resnet.fc.in_features
        self.cell_size = channels + (objects + COUNT_FEATURES if objects else 0) if attention else 0
        self.backbone = nn.Sequential(*list(resnet.children())[:-1])  # everything up to and including avgpool
        self.embed = nn.Linear(self.feature_size, embed_size)
        self.embed_cells = nn.Linear(self.cell_size, embed_size) if attention else None
        # Freezing random weights makes useless features, so "auto" freezes only what was pretrained.
        trainable = {"yes": True, "no": False, "auto": not self.pretrained}[train_backbone]
        if trainable and not self.pretrained:
            zero_init_residual(resnet)
        self.set_backbone_trainable(trainable)

    @property
    def attention(self) -> bool:
        return self.embed_cells is not None

    def features_width(self, image_size: int) -> int:
        """Numbers per image in pooled_features() (and in a row of the feature cache) at that crop size."""
        return self.feature_size + (self.cell_size * stage_side(image_size, self.attention_stage) ** 2
                                    if self.attention else 0)

    def set_backbone_trainable(self, trainable: bool, last_stages: int | None = None) -> None:
        """Freeze or unfreeze the backbone; with last_stages, unfreeze only the deepest ResNet stages."""
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(trainable and last_stages is None)
        for parameter in [] if self.objects is None else self.objects.parameters():  # reads layer3: a stage deeper
            parameter.requires_grad_(trainable and (last_stages is None or last_stages >= 2))
        if trainable and last_stages is not None:
            for module in self.backbone_stages()[len(STAGES) - last_stages:]:
                for parameter in module.parameters():
                    parameter.requires_grad_(True)
        self.train(self.training)

    def backbone_stages(self) -> list[nn.Module]:
        """The four ResNet stages of the backbone, shallow to deep."""
        return [self.backbone[index] for index in range(4, 8)]  # conv1, bn1, relu, maxpool come first

    @property
    def backbone_trainable(self) -> bool:
        return any(parameter.requires_grad for parameter in self.backbone_parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The CNN's parameters: the ResNet's, and the centre head's when it is read."""
        return list(self.backbone.parameters()) + ([] if self.objects is None else list(self.objects.parameters()))

    def train(self, mode: bool = True) -> "EncoderCNN":
        """Like nn.Module.train, but frozen backbone parts stay in eval mode so BatchNorm statistics do not drift."""
        super().train(mode)
        for module in self.backbone.modules():
            if isinstance(module, nn.BatchNorm2d) and not module.weight.requires_grad:
                module.eval()
        return self

    def pooled_features(self, images: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """(batch, 3, H, W) images -> (batch, features_width) image features: pooled, then (attention) the cells."""
        return self.pool(self.feature_map(images, precision), precision)

    def feature_map(self, images: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """(batch, 3, H, W) images -> (batch, C, h, w): the map the features are made of, the last convolutional
        stage's output (H/32 x W/32), or layer3's (H/16 x W/16) with attention over it. Word maps are drawn on it.

        The one way the CNN runs, in training, captioning, word maps and the feature cache alike: on channels_last
        images (what oneDNN and cuDNN convolve fastest), under the autocast that precision picks for the device.
        """
        images = images.contiguous(memory_format=torch.channels_last)
        with autocast(images.device, precision):
            return self.backbone[:-2 if self.attention_stage == "layer3" else -1](images)

    def pool(self, feature_map: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """(batch, C, h, w) feature map -> (batch, features_width): averaged over space; with attention, its cells
        follow the average (layer3's map goes through layer4 before it is averaged). Layer4 and the centre head run under the
        same autocast as feature_map(): in bf16 its map is bf16, which fp32 weights outside autocast refuse."""
        if not self.attention:
            return self.backbone[-1](feature_map).flatten(1)
        with autocast(feature_map.device, precision):
            last = self.backbone[-2](feature_map) if self.attention_stage == "layer3" else feature_map
            pooled = self.backbone[-1](last).flatten(1)
            cells = feature_map.flatten(2).transpose(1, 2)  # (batch, cells, channels)
            if self.objects is not None:
                found = self.objects(feature_map).float().softmax(dim=1).flatten(2).transpose(1, 2)  # (batch, cells, K)
                counts = found[..., 1:].sum(dim=1)  # (batch, pairs): class 0 is "no centre here"
                own = (found[..., 1:] * counts.unsqueeze(1)).sum(dim=2, keepdim=True)  # each cell's pair's count
                pooled = torch.cat([pooled, counts.to(pooled.dtype)], dim=1)
                cells = torch.cat([cells, found.to(cells.dtype), count_features(own).to(cells.dtype)], dim=2)
        return torch.cat([pooled, cells.flatten(1)], dim=1)

    def forward(self, images: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """(batch, 3, H, W) images -> image features: (batch, embed_size), or with attention (batch, 1 + cells,
        embed_size), the pooled feature first."""
        return self.project(self.pooled_features(images, precision))

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """(batch, features_width) features (e.g. from the feature cache) -> (batch, embed_size), or with attention
        (batch, 1 + cells, embed_size): the projected pooled feature, then each projected cell."""
        pooled = pooled.float()
        if not self.attention:
            return self.embed(pooled)
        cells = pooled[:, self.feature_size:].unflatten(1, (-1, self.cell_size))  # (batch, cells, cell_size)
        return torch.cat([self.embed(pooled[:, :self.feature_size]).unsqueeze(1), self.embed_cells(cells)], dim=1)


class Attention(nn.Module):
    """Soft attention over an image's cells (Show, Attend and Tell, Xu et al. 2015, with its gate): where to look
    for the next word, given the LSTM's state, and with_word, the word just read (DecoderRNN.look_for); with
    coverage, also how much attention each cell has had so far (Tu et al. 2016)."""

    def __init__(self, embed_size: int, hidden_size: int, with_word: bool = False, coverage: bool = False) -> None:
        super().__init__()
        asker = hidden_size + (embed_size if with_word else 0)  # the state, and the word just read (with_word)
        self.keys = nn.Linear(embed_size, embed_size)  # applied once per image: cells -> keys
        self.query = nn.Linear(asker, embed_size)
        self.cover = nn.Linear(1, embed_size, bias=False) if coverage else None  # the attention each cell has had
        self.score = nn.Linear(embed_size, 1)
        self.gate = nn.Linear(asker, embed_size)  # how much of the image this word needs

    def forward(self, hidden: torch.Tensor, cells: torch.Tensor, keys: torch.Tensor,
                covered: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, hidden) state (with_word: then the embedded word just read), (batch, cells, embed) cells and their
        keys, (batch, cells) attention so far (coverage) -> (batch, embed) gated context and (batch, cells) attention
        weights."""
        keys = keys + self.query(hidden).unsqueeze(1)
        if self.cover is not None:  # self.cover(covered), as a product: a Linear of one input is a slow matmul
            keys = torch.addcmul(keys, covered.unsqueeze(-1), self.cover.weight.squeeze(-1))
        weights = self.score(torch.tanh(keys)).squeeze(-1).softmax(dim=-1)
        context = (weights.unsqueeze(-1) * cells).sum(dim=1) * torch.sigmoid(self.gate(hidden))
        return context, weights


class DecoderRNN(nn.Module):
    """LSTM language model conditioned on the image: the image feature is the first input, then the words.

    With attention, the image features are (batch, 1 + cells, embed): the first input is the pooled feature with
    the cells' mean, and each word comes with a context the decoder attends to among the cells. Its state is then
    (h, c, cells, keys), and with coverage the attention each cell has had so far, every part with the batch on
    dimension 1, so that beam search reorders it like (h, c).
    """

    def __init__(self, embed_size: int, hidden_size: int, vocab_size: int, num_layers: int = 1,
                 dropout: float = 0.0, start_index: int = 1, end_index: int = 2, pad_index: int = 0,
                 attention: bool = False, query_word: bool = False, coverage: bool = False) -> None:
        super().__init__()
        self.start_index, self.end_index, self.pad_index = start_index, end_index, pad_index
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.lstm = nn.LSTM(embed_size * (2 if attention else 1), hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.attend = Attention(embed_size, hidden_size, query_word, coverage) if attention else None
        self.query_word = query_word
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, vocab_size)
        # Auxiliary head: which words occur in the image's captions. It gives the encoder a direct, dense signal,
        # which is what makes a randomly initialised CNN learn (Fang et al. 2015, "From Captions to Visual Concepts").
        self.bow_head = nn.Linear(embed_size, vocab_size)

    @property
    def vocab_size(self) -> int:
        return self.fc.out_features

    def forward(self, features: torch.Tensor, captions: torch.Tensor,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced scores: (batch, embed) features (with attention (batch, 1 + cells, embed)), (batch, T)
        captions -> (batch, T, vocab) scores.

        As in the original, output t predicts captions[:, t]; the inputs are the image then captions[:, :-1].
        With lengths, the scores at padding are those of a zero hidden state.
        """
        return self.scores(self.hidden_states(features, captions, lengths))  # (batch, T, vocab)

    def hidden_states(self, features: torch.Tensor, captions: torch.Tensor,
                      lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The LSTM outputs of forward(), before the output layer: (batch, T, hidden); zero at padding."""
        self.check_features(features)
        words = self.dropout(self.embed(captions[:, :-1]))  # (batch, T-1, embed)
        if self.attend is None:
            hidden = self.lstm(torch.cat([features.unsqueeze(1), words], dim=1))[0]  # (batch, T, hidden)
        else:  # the context of each word depends on the state before it: one step at a time
            hidden = self.attentive_states(features, words, lengths)
        if lengths is None:
            return hidden
        # The pooled decoder's LSTM runs over the padding too: an output depends only on the inputs before it, so a caption's outputs
        # are those of its own length, and zeroing the rest is cheaper than packing the batch (whose backward pass
        # builds a batch-sized gradient for every time step).
        real = torch.arange(captions.size(1), device=captions.device) < lengths.to(captions.device).unsqueeze(1)
        return hidden * real.unsqueeze(-1)

    def attentive_states(self, features: torch.Tensor, words: torch.Tensor,
                         lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Attention decoder, teacher-forced: (batch, 1 + cells, embed) features and (batch, T-1, embed) embedded
        words -> (batch, T, hidden) outputs.

        With lengths, each step runs on the captions that still have a word there, and the outputs past a caption's
        length are zero: the captions go longest first, so those are the first rows: no step is spent on padding.
        """
        batch, steps = words.size(0), words.size(1) + 1
        active = [batch] * steps
        if lengths is not None:
            lengths, order = lengths.to(words.device).sort(descending=True, stable=True)
            features, words = features[order], words[order]
            active = (lengths.unsqueeze(0) > torch.arange(steps, device=words.device).unsqueeze(1)).sum(1).tolist()
        output, state = self.look(features)
        outputs = [output]
        for position in range(steps - 1):
            rows = active[position + 1]
            if rows < active[position]:
                state = tuple(part[:, :rows] for part in state)
            if rows:
                output, state = self.attentive_step(words[:rows, position], state)
            outputs.append(F.pad(output[:rows], (0, 0, 0, batch - rows)))
        hidden = torch.stack(outputs, dim=1)
        return hidden if lengths is None else hidden[order.argsort()]  # back in the batch's order

    def check_features(self, features: torch.Tensor) -> None:
        """ValueError unless the features are the kind this decoder reads: pooled, or pooled and cells."""
        if features.dim() != (3 if self.attend is not None else 2):
            kind = "attends over image cells" if self.attend is not None else "reads one pooled feature per image"
            raise ValueError(f"this decoder {kind}, but the image features are {tuple(features.shape)}: build the "
                             f"EncoderCNN with the decoder's attention setting (config.attention)")

    def look(self, features: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Attention decoder, first input: (batch, 1 + cells, embed) -> (batch, hidden) output, state (h, c, cells,
        keys), and with coverage (cells, batch) zeros: no cell has been looked at yet."""
        summary, cells = features[:, 0], features[:, 1:]
        output, (h, c) = self.lstm(torch.cat([summary, cells.mean(dim=1)], dim=1).unsqueeze(1))
        state = (h, c, cells.transpose(0, 1), self.attend.keys(cells).transpose(0, 1))
        if self.attend.cover is not None:
            state += (cells.new_zeros(cells.shape[1], cells.shape[0]),)
        return output.squeeze(1), state

    def attentive_step(self, words: torch.Tensor, state: tuple[torch.Tensor, ...]
                       ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Attention decoder, one word: (batch, embed) embedded words -> (batch, hidden) output, new state."""
        h, c, cells, keys, *covered = state
        context, weights = self.look_for(words, state)
        output, (h, c) = self.lstm(torch.cat([words, context], dim=1).unsqueeze(1), (h, c))
        covered = [covered[0] + weights.transpose(0, 1)] if covered else []  # coverage: add where it looked
        return output.squeeze(1), (h, c, cells, keys, *covered)

    def look_for(self, words: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention decoder: where to look as (batch, embed) embedded words are read in that state: (batch, embed)
        context and (batch, cells) weights. The state alone has chosen only a distribution over the word it has just
        been given; with query_word, the word itself asks too: once "red" is read, the red object's cells are looked
        at for its shape (Anderson et al. 2018's attention LSTM reads the word before it attends)."""
        h, _, cells, keys, *covered = state
        asker = torch.cat([h[-1], words], dim=1) if self.query_word else h[-1]
        return self.attend(asker, cells.transpose(0, 1), keys.transpose(0, 1),
                           covered[0].transpose(0, 1) if covered else None)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Word scores for LSTM outputs: (..., hidden) -> (..., vocab)."""
        return self.fc(self.dropout(hidden))

    def bow_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Image features -> (batch, vocab) logits of each word occurring in the image's captions (from the pooled
        feature alone when there are cells)."""
        return self.bow_head(features if features.dim() == 2 else features[:, 0])

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Feed the image then <start>: returns the first word's log-probabilities (batch, vocab) and the state."""
        self.check_features(features)
        state = self.lstm(features.unsqueeze(1))[1] if self.attend is None else self.look(features)[1]
        start = torch.full((features.size(0),), self.start_index, dtype=torch.long, device=features.device)
        return self.step(start, state)

    def step(self, words: torch.Tensor, state: tuple[torch.Tensor, ...]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One decoding step: (batch,) word ids -> (batch, vocab) log-probabilities of the next word, new state."""
        if self.attend is None:
            hidden, state = self.lstm(self.embed(words).unsqueeze(1), state)
            hidden = hidden.squeeze(1)
        else:
            hidden, state = self.attentive_step(self.embed(words), state)
        return F.log_softmax(self.fc(hidden), dim=-1), state

    @torch.no_grad()
    def greedy(self, features: torch.Tensor, max_len: int = 20) -> torch.Tensor:
        """Greedy decoding for a whole batch: (batch, embed) -> (batch, <= max_len) word ids.

        Each row ends at its first <end> (included); what follows is <pad>. <start> is not included.
        """
        log_probs, state = self.init_state(features)
        finished = torch.zeros(features.size(0), dtype=torch.bool, device=features.device)
        words = []
        for _ in range(max_len):
            word = log_probs.argmax(dim=-1).masked_fill(finished, self.pad_index)
            words.append(word)
            finished |= word == self.end_index
            if finished.all():
                break
            log_probs, state = self.step(word, state)
        return torch.stack(words, dim=1)

    def sample_with_log_probs(self, features: torch.Tensor, max_len: int = 20
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample one caption per row from the model's distribution, keeping the graph (self-critical training).

        Returns word ids (batch, <= max_len), laid out like greedy(), and the log-probability of each sampled word
        (batch, <= max_len), zero after <end>; their sum over a row is the caption's log-probability.

        Only the captions still going take the next step: a finished row's state is dropped, not carried along.
        """
        log_probs, state = self.init_state(features)
        batch, device = features.size(0), features.device
        going = torch.arange(batch, device=device)  # the rows that log_probs and state hold
        words = torch.full((batch, max_len), self.pad_index, dtype=torch.long, device=device)
        chosen = []
        for position in range(max_len):
            word = torch.multinomial(log_probs.detach().exp(), 1).squeeze(1)
            words[going, position] = word
            chosen.append(log_probs.new_zeros(batch).index_copy(0, going, log_probs.gather(1, word[:, None])[:, 0]))
            on = word != self.end_index
            if not on.any():
                break
            if not on.all():
                going, word, state = going[on], word[on], tuple(part[:, on] for part in state)
            log_probs, state = self.step(word, state)
        return words[:, :len(chosen)], torch.stack(chosen, dim=1)

    @torch.no_grad()
    def beam_search(self, features: torch.Tensor, beam_size: int = 3, max_len: int = 20) -> torch.Tensor:
        """Beam search for a whole batch: (batch, embed) -> (batch, <= max_len) word ids, like greedy().

        Finished hypotheses stay in the beam with a frozen score; the most probable hypothesis wins. beam_size 1 is
        greedy decoding.
        """
        batch, vocab = features.size(0), self.vocab_size
        log_probs, state = self.init_state(features)  # (batch, vocab)
        # Expand every image to beam_size rows: (batch * beam, ...)
        state = tuple(tensor.repeat_interleave(beam_size, dim=1) for tensor in state)
        log_probs = log_probs.repeat_interleave(beam_size, dim=0)
        scores = torch.full((batch, beam_size), float("-inf"), device=features.device)
        scores[:, 0] = 0.0  # all beams start identical: keep one so the first step does not pick duplicates
        sequences = torch.empty(batch, beam_size, 0, dtype=torch.long, device=features.device)
        finished = torch.zeros(batch, beam_size, dtype=torch.bool, device=features.device)
        for _ in range(max_len):
            # A finished hypothesis may only continue with <pad>, at no cost.
            log_probs = log_probs.view(batch, beam_size, vocab)
            frozen = torch.full_like(log_probs, float("-inf"))
            frozen[..., self.pad_index] = 0.0
            log_probs = torch.where(finished.unsqueeze(-1), frozen, log_probs)
            candidates = (scores.unsqueeze(-1) + log_probs).view(batch, -1)  # (batch, beam * vocab)
            scores, flat = candidates.topk(beam_size, dim=-1)
            parent, word = flat // vocab, flat % vocab  # (batch, beam)
            sequences = torch.cat([sequences.gather(1, parent.unsqueeze(-1).expand_as(sequences)),
                                   word.unsqueeze(-1)], dim=-1)
            finished = finished.gather(1, parent) | (word == self.end_index)
            if finished.all():
                break
            rows = (parent + torch.arange(batch, device=features.device).unsqueeze(1) * beam_size).view(-1)
            state = tuple(tensor[:, rows] for tensor in state)
            log_probs, state = self.step(word.view(-1), state)
        best = scores.argmax(dim=-1)  # (batch,)
        return sequences[torch.arange(batch, device=features.device), best]


def decode(decoder: DecoderRNN, features: torch.Tensor, beam_size: int = 1, max_len: int = 20) -> torch.Tensor:
    """Captions for a batch of image features: greedy when beam_size is 1, beam search otherwise."""
    if beam_size <= 1:
        return decoder.greedy(features, max_len=max_len)
    return decoder.beam_search(features, beam_size=beam_size, max_len=max_len)


def build_encoder(config: Config, pretrained: str | None = None, train_backbone: str | None = None,
                  weights: str | None = None, objects: int = 0) -> EncoderCNN:
    """The encoder a config describes. pretrained, train_backbone and weights default to the config's; a checkpoint's
    model is built with pretrained "no" (its weights are loaded after) and objects its centre head's classes."""
    return EncoderCNN(config.embed_size, config.backbone,
                      config.pretrained if pretrained is None else pretrained,
                      config.train_backbone if train_backbone is None else train_backbone,
                      config.weights if weights is None else weights, config.attention, objects,
                      config.attention_stage)


def build_decoder(config: Config, vocab) -> DecoderRNN:
    """The decoder a config describes, sized for a vocabulary (anything with len() and the special tokens' indices)."""
    return DecoderRNN(config.embed_size, config.hidden_size, len(vocab), config.num_layers, config.dropout,
                      start_index=vocab.start_index, end_index=vocab.end_index, pad_index=vocab.pad_index,
                      attention=config.attention, query_word=config.query_word, coverage=config.coverage)

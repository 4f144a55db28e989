"""What every tiny checkpoint builder shares: the characters of the tiny vocabularies, the JSON writer and the
wider spread of random weights (see app/models/fixtures.py's docstring for why).

Below both builders — fixtures.py (GTE, StructBERT, and `build_all` over every family) and uninlu/fixture.py
(RexUniNLU) — so that neither imports the other's module for them. Imports nothing from the app; torch only
inside `widen`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Frequent characters, plus those in the model cards' examples and the presets.
HANZI = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么"
    "心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分"
    "将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重"
    "被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住"
    "员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制"
    "解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非"
    "流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量"
    "空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委"
    "早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴照注送团议北京天安门上海"
    "西班牙巴塞罗那洋议会组织机构创始人物地理位置事件触发词胜负时间属性情感正向负向中立蕴含矛盾段落关系匹配相似"
    "阿里巴巴马云杭州腾讯深圳百度李彦宏苹果手机很好价格便宜质量服务态度差评论球队比赛获得冠军昨晚今天明天北大学"
    "合同甲方乙方金额签订日期公司成立于年月日号我们你们他们喜欢讨厌推荐电影音乐体育科技财经娱乐游戏汽车房产教育"
)
ASCII = list("abcdefghijklmnopqrstuvwxyz0123456789")
PUNCT = list("，。！？、：；“”‘’（）《》【】—…·,.!?:;'\"()[]-_/#%&*+=@$")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def widen(module, seed: int, std: float = 0.25) -> None:  # noqa: ANN001
    """Redraw weights with a wider spread (the reason is in fixtures.py's docstring); LayerNorms stay at identity."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                continue
            p.copy_(torch.randn(p.shape, generator=gen) * (std if p.dim() > 1 else std / 5))

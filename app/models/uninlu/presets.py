"""Ready-made RexUniNLU tasks: the model card's examples as plain data for the UI, the CLI and the docs.

Each preset is a dict: `id`, `title_zh`, `title_en`, `task` (extract | classify | multi_classify), `schema`
(the nested dict; `None` leaves), `text` (the example, without a [CLASSIFY]/[MULTICLASSIFY] marker: the
task says which mode to use), and `note` (how the task is phrased, in Chinese). Pure data; no imports
beyond the standard library and app.errors (itself standard library only), for the error an unknown id raises.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from app.errors import InputError

_PRESETS: list[dict[str, Any]] = [
    {
        "id": "ner",
        "title_zh": "命名实体识别",
        "title_en": "Named entity recognition",
        "task": "extract",
        "schema": {"人物": None, "地理位置": None, "组织机构": None},
        "text": "1944年毕业于北大的名古屋铁道会长谷口清太郎等人在日本积极筹资，"
        "共筹款2.7亿日元，参加捐款的日本企业有69家。",
        "note": "{实体类型: null}",
    },
    {
        "id": "relation",
        "title_zh": "关系抽取",
        "title_en": "Relation extraction",
        "task": "extract",
        "schema": {
            "组织机构": {
                "注册资本(数字)": None,
                "创始人(人物)": None,
                "董事长(人物)": None,
                "总部地点(地理位置)": None,
                "代言人(人物)": None,
                "成立日期(时间)": None,
                "占地面积(数字)": None,
                "简称(组织机构)": None,
            }
        },
        "text": "1987年首播的央视版《红楼梦》是中央电视台和中国电视剧制作中心"
        "根据中国古典文学名著《红楼梦》摄制的一部古装连续剧",
        "note": "{主语实体类型: {关系(宾语实体类型): null}}",
    },
    {
        "id": "event",
        "title_zh": "事件抽取",
        "title_en": "Event extraction",
        "task": "extract",
        "schema": {"胜负(事件触发词)": {"时间": None, "败者": None, "胜者": None, "赛事名称": None}},
        "text": "7月28日，天津泰达在德比战中以0-1负于天津天海。",
        "note": "{事件类型(事件触发词): {参数类型: null}}",
    },
    {
        "id": "aspect_sentiment",
        "title_zh": "属性情感抽取",
        "title_en": "Aspect–opinion extraction",
        "task": "extract",
        "schema": {"属性词": {"情感词": None}},
        "text": "很满意，音质很好，发货速度快，值得购买",
        "note": "{属性词: {情感词: null}}",
    },
    {
        "id": "aspect_sentiment_implicit",
        "title_zh": "属性情感抽取（属性缺省）",
        "title_en": "Aspect–opinion extraction, aspect may be missing",
        "task": "extract",
        "schema": {"属性词": {"情感词": None}},
        "text": "#很满意，音质很好，发货速度快，值得购买",
        "note": "正文以 # 开头：允许属性词缺省，缺省的属性词抽取为 #",
    },
    {
        "id": "aspect_polarity",
        "title_zh": "属性情感分类",
        "title_en": "Aspect sentiment polarity",
        "task": "extract",
        "schema": {"属性词": {"正向情感(情感词)": None, "负向情感(情感词)": None, "中性情感(情感词)": None}},
        "text": "很满意，音质很好，发货速度快，值得购买",
        "note": "{属性词: {正向情感(情感词): null, 负向情感(情感词): null, 中性情感(情感词): null}}",
    },
    {
        "id": "coreference",
        "title_zh": "指代消解",
        "title_en": "Coreference resolution",
        "task": "classify",
        "schema": {
            "下面的句子中，代词“它”指代的是“事物”吗？是的": None,
            "下面的句子中，代词“它”指代的是“事物”吗？不是": None,
        },
        "text": "因为周围的山水，早已是一派浑莽无际的绿色了。"
        "任何事物（候选词）一旦达到某种限度，你就不能再给它(代词)增加什么了。",
        "note": "schema 为“自行设计的 prompt + 候选标签”",
    },
    {
        "id": "sentiment",
        "title_zh": "情感分类",
        "title_en": "Sentiment classification",
        "task": "classify",
        "schema": {"正向情感": None, "负向情感": None},
        "text": "有点看不下去了，看作者介绍就觉得挺矫情了，文字也弱了点。后来才发现 大家对这本书评价都很低。亏了。",
        "note": "也可换成情绪标签，如 无情绪、积极、愤怒、悲伤、恐惧、惊奇",
    },
    {
        "id": "topic",
        "title_zh": "单标签文本分类",
        "title_en": "Text classification (single label)",
        "task": "classify",
        "schema": {"民生": None, "文化": None, "娱乐": None, "体育": None, "财经": None, "教育": None},
        "text": "学校召开2018届升学及出国深造毕业生座谈会就业指导",
        "note": "schema 列举候选分类标签",
    },
    {
        "id": "multi_label",
        "title_zh": "多标签文本分类",
        "title_en": "Text classification (multi-label)",
        "task": "multi_classify",
        "schema": {
            "民间故事": None, "推理": None, "心理学": None, "历史": None, "传记": None, "外国名著": None,
            "文化": None, "诗歌": None, "童话": None, "艺术": None, "科幻": None, "小说": None,
        },
        "text": "《格林童话》是德国民间故事集。由德国的雅各格林和威廉格林兄弟根据民间口述材料改写而成。"
        "其中的《灰姑娘》、"
        "《白雪公主》、《小红帽》、《青蛙王子》等童话故事，已被译成多种文字，在世界各国广为流传，成为各地收集民间故事的范例。",
        "note": "返回置信度高于 0.9 的全部标签，没有时返回最高的一个",
    },
    {
        "id": "hierarchical",
        "title_zh": "层次分类",
        "title_en": "Hierarchical classification",
        "task": "classify",
        "schema": {
            "APP系统功能": {"蓝牙钥匙故障": None, "界面显示异常": None, "数据显示不准确": None, "远程控制故障": None},
            "电器-附件": {"电子模块问题": None, "雨刮、洗涤器故障": None, "防盗报警系统": None, "定速巡航系统": None},
        },
        "text": "雨刷刮不干净怎么办",
        "note": "{层级1标签: {层级2标签: null}}",
    },
    {
        "id": "text_matching",
        "title_zh": "文本匹配",
        "title_en": "Text matching",
        "task": "classify",
        "schema": {"文本匹配：相似": None, "文本匹配：不相似": None},
        "text": "段落1：高分子材料与工程排名；段落2：高分子材料与工程专业的完整定义",
        "note": "正文写成“段落1：…；段落2：…”",
    },
    {
        "id": "nli",
        "title_zh": "自然语言推理",
        "title_en": "Natural language inference",
        "task": "classify",
        "schema": {
            "段落2和段落1的关系是：蕴含": None,
            "段落2和段落1的关系是：矛盾": None,
            "段落2和段落1的关系是：中立": None,
        },
        "text": "段落1：呃,银行听说都要扣一点这个转手费；段落2：从未有银行扣过手续费",
        "note": "正文写成“段落1：…；段落2：…”",
    },
    {
        "id": "choice_mrc",
        "title_zh": "选择类阅读理解",
        "title_en": "Multiple-choice reading comprehension",
        "task": "classify",
        "schema": {
            "B为什么不坐飞机?飞机票太贵": None,
            "B为什么不坐飞机?时间来不及": None,
            "B为什么不坐飞机?坐飞机头晕": None,
            "B为什么不坐飞机?飞机票太便宜": None,
        },
        "text": "A：最近飞机票打折挺多的，你还是坐飞机去吧。"
        "B：反正又不是时间来不及，飞机再便宜我也不坐，我一听坐飞机就头晕。",
        "note": "schema 为“问题 + 候选选项”",
    },
    {
        "id": "extractive_mrc",
        "title_zh": "抽取类阅读理解",
        "title_en": "Extractive reading comprehension",
        "task": "extract",
        "schema": {"大莱龙铁路位于哪里？": None},
        "text": "大莱龙铁路位于山东省北部环渤海地区，西起位于益羊铁路的潍坊大家洼车站，"
        "向东经海化、寿光、寒亭、昌邑、平度、莱州、"
        "招远、终到龙口，连接山东半岛羊角沟、潍坊、莱州、龙口四个港口，全长175公里，工程建设概算总投资11.42亿元。铁路西与"
        "德大铁路、黄大铁路在大家洼站接轨，东与龙烟铁路相连。大莱龙铁路于1997年11月批复立项，2002年12月28日全线铺通，"
        "2005年6月建成试运营，是横贯山东省北部的铁路干线德龙烟铁路的重要组成部分，构成山东省北部沿海通道，并成为环渤海"
        "铁路网的南部干线。铁路沿线设有大家洼站、寒亭站、昌邑北站、海天站、平度北站、沙河站、莱州站、朱桥站、招远站、"
        "龙口西站、龙口北站、龙口港站。",
        "note": "schema 的键就是问题：{问题: null}",
    },
]


def presets() -> list[dict[str, Any]]:
    """Every preset, in display order (a deep copy: callers may change it freely)."""
    return copy.deepcopy(_PRESETS)


def preset(preset_id: str) -> dict[str, Any]:
    for p in _PRESETS:
        if p["id"] == preset_id:
            return copy.deepcopy(p)
    raise InputError(f"unknown preset {preset_id!r}; known: {', '.join(p['id'] for p in _PRESETS)}")


def schema_json(p: dict[str, Any]) -> str:
    """The preset's schema as the JSON text a user would type (null leaves, Chinese kept readable)."""
    return json.dumps(p["schema"], ensure_ascii=False)


def preset_characters() -> str:
    """Every character the presets use (texts and schemas): the tiny test vocabulary must cover them."""
    seen: dict[str, None] = {}
    for p in _PRESETS:
        for ch in p["text"] + schema_json(p):
            seen.setdefault(ch, None)
    return "".join(seen)

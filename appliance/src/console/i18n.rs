//! The console's words, in zh-CN (the default) and en. Every key has both; a test checks it.

/// The console's language (from the `sl_lang` cookie): the domain's two languages.
pub use crate::domain::Lang;

/// (key, zh-CN, en)
const WORDS: &[(&str, &str, &str)] = &[
    ("app", "Screenline 过机安检", "Screenline screening"),
    ("switch", "English", "中文"),
    ("login", "登录", "Log in"),
    ("logout", "退出", "Log out"),
    ("user", "用户名", "User name"),
    ("password", "密码", "Password"),
    ("login.failed", "用户名或密码错误", "Wrong user name or password"),
    ("login.locked", "登录尝试过多，请稍候几秒再试", "Too many login attempts; wait a moment and try again"),
    ("login.busy", "登录繁忙，请一秒后再试", "Logins are busy; try again in a second"),
    ("login.expired", "登录已过期，请重新登录", "Your session ended; log in again"),
    ("nav.line", "产线", "Line"),
    ("nav.flagged", "待复核", "Flagged"),
    ("nav.search", "查询", "Search"),
    ("nav.devices", "设备", "Devices"),
    ("nav.model", "模型", "Model"),
    ("nav.config", "配置", "Config"),
    ("nav.logs", "日志", "Logs"),
    ("nav.audit", "审计", "Audit"),
    ("role.operator", "操作员", "operator"),
    ("role.technician", "技术员", "technician"),
    ("decided", "已判定", "Decided"),
    ("cleared", "放行", "Cleared"),
    ("flagged", "标记上报", "Flagged"),
    ("manual", "人工开箱", "Manual"),
    ("reported", "已上报", "Reported"),
    ("backlog", "待上报", "Backlog"),
    ("late", "超时判定", "Late decisions"),
    ("decision.clear", "放行", "clear"),
    ("decision.flag", "标记上报", "flagged"),
    ("decision.manual", "人工开箱", "manual"),
    ("col.time", "时间", "Time"),
    ("col.line", "产线", "Line"),
    ("col.waybill", "运单号", "Waybill"),
    ("col.sender", "寄件人", "Sender"),
    ("col.decision", "判定", "Decision"),
    ("col.reasons", "原因", "Reasons"),
    ("col.category", "品类", "Category"),
    ("col.score", "可疑度", "Score"),
    ("col.diverter", "分拣", "Diverter"),
    ("col.review", "复核", "Review"),
    ("live", "实时", "live"),
    ("outcome.passed", "已通过", "passed"),
    ("outcome.diverted", "已分流", "diverted"),
    ("outcome.fail-safe", "安全分流（判定未及时到达）", "diverted fail-safe (no decision in time)"),
    ("outcome.pending", "在途", "on the belt"),
    ("disconnected", "连接中断，正在重连…", "Disconnected, reconnecting…"),
    ("links", "链路", "Links"),
    ("stack", "信号灯", "Stack light"),
    ("light.green", "绿灯：正常过检", "green: screening"),
    ("light.amber", "黄灯：转人工开箱", "amber: to manual inspection"),
    ("light.red", "红灯：需技术员处理", "red: technician needed"),
    ("light.off", "熄灭", "off"),
    ("light.unknown", "未知", "unknown"),
    ("queue.empty", "没有待复核的包裹", "Nothing waiting for review"),
    ("queue.hint", "标记和人工开箱的包裹，开箱后请确认或放行。", "Flagged and manual parcels: after opening, confirm or clear."),
    ("parcel", "包裹", "Parcel"),
    ("image", "X 光图像", "X-ray image"),
    ("image.none", "没有图像", "No image"),
    ("tool.colour", "伪彩色", "Colour"),
    ("tool.grey", "黑白", "Grey"),
    ("tool.negative", "反色", "Negative"),
    ("tool.high", "高穿透", "High pen."),
    ("tool.low", "低穿透", "Low pen."),
    ("tool.organic", "仅有机物", "Organic only"),
    ("tool.inorganic", "仅无机物", "Inorganic only"),
    ("tool.edges", "边缘增强", "Edges"),
    ("tool.zoom-in", "放大", "Zoom in"),
    ("tool.zoom-out", "缩小", "Zoom out"),
    ("tool.reset", "复原", "Reset"),
    ("tool.boxes", "识别框", "Boxes"),
    ("viewer.rgb_only", "高穿透与低穿透不可用：本机 X 光机只输出一张伪彩色图像，没有可调窗的 16 位双能数据；物质剥离按颜色（橙＝有机物，绿＝混合物，蓝＝金属）进行。", "High and low penetration are not available: this X-ray machine writes one pseudo-colour image, without the 16-bit dual-energy data they window; material stripping works from its colours (orange organic, green mixed, blue metal)."),
    ("viewer.failed", "图像无法显示", "The image cannot be shown"),
    ("viewer.gone", "图像已按保存规则删除", "The image was removed by the retention rules"),
    ("viewer.zoom", "缩放", "Zoom"),
    ("viewer.boxes", "模型识别框", "The model's boxes"),
    ("viewer.no_boxes", "模型未给出识别框", "The model found no boxes"),
    ("viewer.loading", "正在载入图像…", "Loading the image…"),
    ("viewer.help", "滚轮缩放，拖动平移；每个工具一个按键，按 R 复原默认视图。", "Wheel to zoom, drag to pan; each tool is one key, R returns to the default view."),
    ("scores", "模型评分", "Model scores"),
    ("counterfeit", "侵权假冒可疑度", "Counterfeit score"),
    ("declared", "申报物品", "Declared goods"),
    ("value", "申报价值", "Declared value"),
    ("quantity", "数量", "Quantity"),
    ("model", "模型", "Model"),
    ("reviews", "复核记录", "Reviews"),
    ("review.none", "尚未复核", "Not reviewed yet"),
    ("review.note", "备注（开箱所见）", "Note (what you found)"),
    ("review.confirm", "确认可疑", "Confirm suspicion"),
    ("review.clear", "开箱无误，放行", "Opened, nothing wrong: clear"),
    ("review.confirmed", "已确认", "confirmed"),
    ("review.cleared", "已放行", "cleared"),
    ("review.saved", "复核已记录", "Review recorded"),
    ("search.hint", "输入运单号（可输入前几位）", "Waybill number (or its first characters)"),
    ("search.go", "查询", "Search"),
    ("search.none", "没有找到", "Nothing found"),
    ("device", "设备", "Device"),
    ("state", "状态", "State"),
    ("since", "自", "Since"),
    ("last_seen", "最近通信", "Last heard"),
    ("detail", "详情", "Detail"),
    ("errors", "错误计数", "Error counts"),
    ("up", "正常", "up"),
    ("down", "异常", "down"),
    ("disk", "磁盘", "Disk"),
    ("disk.free", "可用", "free"),
    ("site.peers", "本场地其他设备（分批寄递协查）", "Other appliances of the site (split shipments)"),
    ("site.peer", "设备", "Appliance"),
    ("site.folded", "已并入的记录", "Sightings folded"),
    ("site.backlog", "待发送记录", "Sightings waiting for the broker"),
    ("site.ledger", "台账寄件人", "Senders in the ledger"),
    ("config.running", "当前运行配置", "Running configuration"),
    ("config.validate", "检查配置", "Validate a configuration"),
    ("config.valid", "配置有效", "The configuration is valid"),
    ("config.invalid", "配置无效", "The configuration is invalid"),
    ("config.paste", "粘贴 TOML 配置后点击检查（不会生效，仅检查）", "Paste a TOML configuration and validate it (checked only, not applied)"),
    ("config.safe", "配置无效：控制台以安全模式运行，产线控制器收不到心跳，所有包裹转人工开箱。请修正配置后重启。", "The configuration is invalid: the console runs in safe mode; the line controllers hear no heartbeat and divert every parcel to manual inspection. Fix the configuration and restart."),
    ("logs.filter", "筛选", "Filter"),
    ("logs.level", "级别", "Level"),
    ("logs.text", "包含文字", "Containing"),
    ("audit.actor", "操作人", "Who"),
    ("audit.action", "操作", "Action"),
    ("audit.target", "对象", "Target"),
    ("forbidden", "此页面仅限技术员", "This page is for technicians"),
    ("notfound", "没有这个记录", "No such record"),
    ("csrf", "表单已过期，请刷新页面后重试", "The form expired; reload the page and try again"),
    ("model.version", "版本", "Version"),
    ("model.sha", "SHA-256", "SHA-256"),
    ("model.labels", "品类", "Categories"),
    ("model.card", "模型说明", "Model card"),
    ("model.running", "正在运行的模型", "Running model"),
    ("model.folder", "模型目录", "Model folder"),
    ("model.metrics", "留出集指标（模型说明）", "Held-out metrics (from the model card)"),
    ("model.swap", "更换模型", "Swap the model"),
    ("model.swap_help", "输入设备上新模型目录的完整路径（含 manifest.json 与 .onnx）。先校验 SHA-256、清单与计算图，预热并用已知图像自检；任何一步失败都保留当前模型。更换在两个包裹之间完成，产线不停。", "Enter the full path of a model folder on this appliance (manifest.json and the .onnx file). It is checked (SHA-256, manifest, graph), warmed up and self-tested on known images; on any failure the running model stays. The swap happens between two parcels; the line keeps running."),
    ("model.swapped", "已更换模型", "Model swapped"),
    ("model.refused", "未更换模型", "Model not swapped"),
    ("model.selftest", "自检", "Self-test"),
    ("model.unavailable", "安全模式下不能更换模型", "The model cannot be swapped in safe mode"),
];

/// The word for `key` in `lang`; the key itself if there is none (a test forbids that).
pub fn t(lang: Lang, key: &str) -> &'static str {
    WORDS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, zh, en)| match lang {
            Lang::Zh => *zh,
            Lang::En => *en,
        })
        .unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_both_languages_once() {
        let mut keys = std::collections::HashSet::new();
        for (k, zh, en) in WORDS {
            assert!(keys.insert(*k), "{k} twice");
            assert!(!zh.is_empty() && !en.is_empty(), "{k}");
        }
        assert_eq!(t(Lang::Zh, "nav.flagged"), "待复核");
        assert_eq!(t(Lang::En, "nav.flagged"), "Flagged");
        assert_eq!(t(Lang::En, "no.such.key"), "?");
    }
}

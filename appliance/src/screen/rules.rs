//! The rules and the decision policy: from a parcel, its real-name findings and the model's
//! scores to a [`Decision`] with reasons a person can read.
//!
//! Policy: a reason the regulator must hear of (real-name missing or invalid, counterfeit
//! suspected) flags the parcel; a parcel the appliance could not judge (no read, no image,
//! unreadable image, classifier failure) goes to manual inspection; otherwise it is cleared.
//! Nothing is flagged without a reason.

use super::model::Model;
use crate::domain::{Decision, Lang, Parcel, Reason, ReasonCode, Scores};

/// Whether a reason code flags (reports) a parcel.
pub fn flags(code: ReasonCode) -> bool {
    matches!(
        code,
        ReasonCode::RealNameMissing
            | ReasonCode::RealNameInvalid
            | ReasonCode::CounterfeitSuspected
    )
}

/// The reason for an image that could not be read.
pub fn image_unreadable(why: &str) -> Reason {
    Reason::new(
        ReasonCode::ImageUnreadable,
        format!("X 光图像无法读取：{why}"),
        format!("the X-ray image cannot be read: {why}"),
    )
}

/// Applies the rules and the policy.
pub fn decide(
    parcel: &Parcel,
    scores: Option<&Scores>,
    model: &Model,
    problems: Vec<Reason>,
) -> (Decision, Vec<Reason>) {
    let mut reasons = Vec::new();
    if parcel.waybill.is_none() {
        reasons.push(Reason::new(
            ReasonCode::NoRead,
            "未读到面单",
            "no waybill was read for this parcel",
        ));
    }
    if parcel.scan.is_none() {
        reasons.push(Reason::new(
            ReasonCode::NoImage,
            "没有对应的 X 光图像",
            "no X-ray image was joined to this parcel",
        ));
    }
    reasons.extend(parcel.findings.iter().cloned());
    reasons.extend(problems);
    if let Some(s) = scores {
        if let Some((category, _)) = s.top() {
            let threshold = model.threshold(category);
            if s.counterfeit >= threshold {
                reasons.push(Reason::new(
                    ReasonCode::CounterfeitSuspected,
                    format!(
                        "疑似侵权假冒商品：{}，可疑度 {:.2}（阈值 {:.2}）",
                        category.label(Lang::Zh),
                        s.counterfeit,
                        threshold
                    ),
                    format!(
                        "suspected counterfeit {}: score {:.2} (threshold {:.2})",
                        category.label(Lang::En),
                        s.counterfeit,
                        threshold
                    ),
                ));
            }
        }
    }
    (policy(&reasons), reasons)
}

/// The decision policy over reason codes.
pub fn policy(reasons: &[Reason]) -> Decision {
    if reasons.iter().any(|r| flags(r.code)) {
        Decision::Flag
    } else if reasons.is_empty() {
        Decision::Clear
    } else {
        Decision::Manual
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: ReasonCode) -> Reason {
        Reason::new(code, "", "")
    }

    #[test]
    fn policy_table() {
        use ReasonCode::*;
        let table: &[(&[ReasonCode], Decision)] = &[
            (&[], Decision::Clear),
            (&[RealNameMissing], Decision::Flag),
            (&[RealNameInvalid], Decision::Flag),
            (&[CounterfeitSuspected], Decision::Flag),
            (&[NoRead], Decision::Manual),
            (&[NoImage], Decision::Manual),
            (&[ImageUnreadable], Decision::Manual),
            (&[ScreeningFailed], Decision::Manual),
            (&[NoImage, RealNameInvalid], Decision::Flag),
        ];
        for (codes, want) in table {
            let reasons: Vec<Reason> = codes.iter().map(|c| r(*c)).collect();
            assert_eq!(policy(&reasons), *want, "{codes:?}");
        }
    }
}

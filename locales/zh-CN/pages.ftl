# 扫码后手机打开的页面（简体中文）。
# 每条消息在 locales/en/pages.ftl 中都有对应的英文（有测试检查）。

## 通用

name-placeholder = 你的昵称
guest = 访客
working-verify = 正在进行人机验证…
failed = 出错了，请重试。
needs-app = 需要进行本页面无法显示的验证，请在应用内打开。
no-session = 无法登录，请重试。

## 群邀请页

invite-title = 加入「{ $name }」
invite-members = { $count }/{ $limit } 位成员
invite-valid-until = 邀请有效期至 { $date }
invite-approval = 新成员需经群管理员审核。
invite-join = 加入群聊
invite-ask = 申请加入
invite-joining = 正在加入…
invite-joined = 你已加入「{ $name }」。
invite-pending = 等待管理员审核…
invite-rejected = 你的入群申请未通过。
invite-request-expired = 申请已过期，管理员未处理。

## 群邀请卡片

card-valid = 该二维码{ $days }天内({ $date }前)有效
card-valid-today = 该二维码仅今天有效

## 红包页

packet-title = 红包
packet-advertising = 广告
packet-default-message = 给你的红包
packet-shares-left = 剩余 { $left }/{ $count } 份
packet-total = 共 { $amount }
packet-until = { $date }前有效
packet-open = 开
packet-opening = 正在打开…
packet-won = 已存入你的钱包。
packet-all-claimed = 红包已被领完。
packet-expired = 红包已过期。

## 说明链接为何无效的页面

invalid-invite-title = 邀请链接无效
invalid-invite-detail = 请确认二维码已完整扫描，或向群成员索取新的邀请。
ask-for-new = 请向群成员索取新的邀请。
invite-expired-title = 邀请已过期
invite-revoked-title = 邀请已被撤销
invite-used-up-title = 邀请已达使用次数上限
group-banned-title = 该群暂不可用
group-banned-detail = 该群已被运营方关闭。
group-full-title = 群已满员
group-full-detail = 目前没有空位。
queue-full-title = 等待审核的申请过多
queue-full-detail = 通过此邀请提交的入群申请太多，管理员尚未处理完，请稍后再试。
invite-paused-title = 邀请已暂停
invite-paused-detail = 此邀请遭遇大量可疑加入，请向群成员索取其他邀请，或稍后再试。
invite-known-title = 群邀请
invite-known-detail = 请打开应用查看你的群聊。
packet-missing-title = 红包不存在
packet-missing-detail = 请确认二维码已完整扫描。
code-expired-title = 已过期
code-expired-detail = 该二维码已过期。
code-revoked-title = 已停用
code-revoked-detail = 该二维码已被停用。
code-missing-title = 未找到
code-missing-detail = 没有这个二维码。
code-not-allowed-title = 无法访问
code-not-allowed-detail = 该二维码指向的网站不在本服务允许跳转的范围内。
landing-no-params = 没有参数。
landing-built-in = 内置落地页：设置 codes.page_base_url 即可将扫码访客引导至你自己的网站。

## 页面显示的接口错误

err-group_full = 群已满员。
err-invite_expired = 邀请已过期。
err-invite_revoked = 邀请已被撤销。
err-invite_exhausted = 邀请已达使用次数上限。
err-invite_paused = 邀请已暂停，请稍后再试。
err-blocked = 你无法加入该群。
err-group_banned = 该群暂不可用。
err-too_many_pending_requests = 等待审核的申请过多，请稍后再试。
err-rate_limited = 操作过于频繁，请稍后再试。
err-already_claimed = 你已经领过这个红包了。
err-packet_empty = 红包已被领完。
err-packet_expired = 红包已过期。
err-outside_geofence = 这个红包只能在发放地点附近领取，请允许获取位置后重试。
err-account_frozen = 该账号无法进行此操作。
err-challenge_failed = 验证未通过，请重试。

## 收款账户绑定（浏览器流程）

link-done-title = 收款账户已绑定
link-done-detail = 之后的提现将转入这个微信账户。可以关闭此页面。
link-state-invalid-title = 这个绑定请求已失效
link-state-invalid-detail = 它已被使用过，或已超过10分钟。请在应用中重新开始绑定。
link-refused-title = 绑定未获确认
link-refused-detail = 微信没有确认这个账户。请在应用中重新开始绑定。
link-failed-title = 暂时无法绑定账户
link-failed-detail = 请几分钟后再试。

## 提现确认页

confirm-title = 确认收款
confirm-button = 在微信中确认收款
confirm-until = 请在 { $date } 前确认；逾期款项将退回钱包。
confirm-status-pending = 提现正在准备中。
confirm-status-processing = 提现正在转账中。
confirm-status-awaiting = 请在微信中确认收款。
confirm-status-succeeded = 已到账：款项已转入微信零钱。
confirm-status-failed = 提现失败，款项已退回钱包。
confirm-status-cancelled = 未在时限内确认，款项已退回钱包。
confirm-done = 已确认，款项即将到账。
confirm-later = 尚未确认，可稍后再确认。
confirm-failed = 微信未能打开确认页，请重试。
confirm-needs-wechat = 请在微信中打开此页面进行确认。
payout-missing-title = 没有这笔提现
payout-missing-detail = 请从应用中重新打开链接。

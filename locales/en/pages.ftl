# The pages a phone opens after a scan (English).
# Every message here has its twin in locales/zh-CN/pages.ftl (a test checks).

## Shared

name-placeholder = Your name
guest = Guest
working-verify = Checking that you are not a robot…
failed = Something went wrong. Please try again.
needs-app = This needs a verification this page cannot show: open it in the app.
no-session = Could not start a session. Please try again.

## Invitation page

invite-title = Join { $name }
invite-members = { $count } of { $limit } { $limit ->
    [one] member
   *[other] members
}
invite-valid-until = invitation valid until { $date }
invite-approval = New members are approved by the group's admins.
invite-join = Join
invite-ask = Ask to join
invite-joining = Joining…
invite-joined = You joined { $name }.
invite-pending = Waiting for approval…
invite-rejected = Your request to join was declined.
invite-request-expired = Your request expired before anyone decided.

## Invitation card

card-valid = { $days ->
    [one] Valid for 1 day (until { $date })
   *[other] Valid for { $days } days (until { $date })
}
card-valid-today = Valid today only

## Red packet page

packet-title = Red packet
packet-advertising = Advertising
packet-default-message = A red packet for you
packet-shares-left = { $left } of { $count } shares left
packet-total = { $amount } in total
packet-until = until { $date }
packet-open = Open
packet-opening = Opening…
packet-won = In your wallet now.
packet-all-claimed = Every share has been claimed.
packet-expired = This red packet has expired.

## Pages that say why a link leads nowhere

invalid-invite-title = This invitation link is not valid
invalid-invite-detail = Check that the whole code was scanned, or ask for a new invitation.
ask-for-new = Ask the group for a new one.
invite-expired-title = This invitation has expired
invite-revoked-title = This invitation was revoked
invite-used-up-title = This invitation has been used up
group-banned-title = This group is not available
group-banned-detail = It was closed by the operator.
group-full-title = This group is full
group-full-detail = No seats are free right now.
queue-full-title = Too many requests are waiting
queue-full-detail = The group's moderators have many join requests through this invitation to answer. Try again later.
invite-paused-title = This invitation is paused
invite-paused-detail = It saw a wave of suspicious joins. Ask the group for another invitation, or try again later.
invite-known-title = Invitation
invite-known-detail = Open the app to see your groups.
packet-missing-title = This red packet does not exist
packet-missing-detail = Check that the whole code was scanned.
code-expired-title = Expired
code-expired-detail = This code has expired.
code-revoked-title = Withdrawn
code-revoked-detail = This code has been withdrawn.
code-missing-title = Not found
code-missing-detail = There is no such code.
code-not-allowed-title = Not available
code-not-allowed-detail = This code leads to a site this server does not send visitors to.
landing-no-params = No parameters.
landing-built-in = A built-in landing page: set codes.page_base_url to send scans to your own site.

## Answers of the API, as the pages show them

err-group_full = This group is full.
err-invite_expired = This invitation has expired.
err-invite_revoked = This invitation was revoked.
err-invite_exhausted = This invitation has been used up.
err-invite_paused = This invitation is paused. Try again later.
err-blocked = You cannot join this group.
err-group_banned = This group is not available.
err-too_many_pending_requests = Too many requests are waiting. Try again later.
err-rate_limited = Too many attempts. Wait a moment and try again.
err-already_claimed = You have already opened this red packet.
err-packet_empty = Every share has been claimed.
err-packet_expired = This red packet has expired.
err-outside_geofence = This red packet can only be opened near where it was handed out. Allow your location and try again.
err-account_frozen = This account cannot do that.
err-challenge_failed = The verification did not pass. Please try again.

## The payment account link (the browser flow)

link-done-title = Your payment account is linked
link-done-detail = Payouts now go to this WeChat account. You can close this page.
link-state-invalid-title = This link request has expired
link-state-invalid-detail = It was used already or is older than 10 minutes. Start linking again in the app.
link-refused-title = The link was not approved
link-refused-detail = WeChat did not confirm the account. Start linking again in the app.
link-failed-title = The account could not be linked now
link-failed-detail = Try again in a few minutes.

## Payout confirmation page

confirm-title = Confirm your payout
confirm-button = Confirm receipt in WeChat
confirm-until = Confirm by { $date }; after that the money goes back to your wallet.
confirm-status-pending = Your payout is being prepared.
confirm-status-processing = Your payout is on its way.
confirm-status-awaiting = Confirm in WeChat to receive it.
confirm-status-succeeded = Paid: the money is in your WeChat balance.
confirm-status-failed = This payout failed; the money is back in your wallet.
confirm-status-cancelled = This payout was not confirmed in time; the money is back in your wallet.
confirm-done = Confirmed. The money arrives in a moment.
confirm-later = Not confirmed yet. You can confirm later.
confirm-failed = WeChat could not show the confirmation. Please try again.
confirm-needs-wechat = Open this page in WeChat to confirm.
payout-missing-title = This payout does not exist
payout-missing-detail = Open the link from the app again.

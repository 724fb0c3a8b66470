namespace Loyalty.Storage;

/// <summary>A program's webhook subscription as stored.</summary>
/// <param name="ProgramId">The program whose events it receives.</param>
/// <param name="WebhookId">Unique within the program.</param>
/// <param name="Url">Where deliveries are POSTed; never another address (redirects are not followed).</param>
/// <param name="Types">Comma-separated event types it wants ("points.earned,tier.changed"); empty for every type.</param>
/// <param name="Secret">The signing secret of <paramref name="KeyVersion"/>. Kept readable: every delivery is signed with it.</param>
/// <param name="KeyVersion">1 for the first secret, one more for each rotation.</param>
/// <param name="PreviousSecret">The secret before the last rotation, still signing until <paramref name="PreviousSecretUntil"/>; null when none.</param>
/// <param name="PreviousSecretUntil">When the previous secret stops signing.</param>
/// <param name="Enabled">False once disabled (by the admin, or after failing for too long).</param>
/// <param name="DisabledReason">Why it is disabled; null while enabled.</param>
/// <param name="FailingSince">When the first delivery that has not succeeded since failed; null while healthy.</param>
/// <param name="Position">The event cursor (opaque text) up to which every event was delivered; at creation, the stream's end then.</param>
/// <param name="CreatedAt">When it was created.</param>
/// <param name="UpdatedAt">When its configuration last changed.</param>
public sealed record WebhookRow(
    string ProgramId,
    string WebhookId,
    string Url,
    string Types,
    string Secret,
    int KeyVersion,
    string? PreviousSecret,
    DateTimeOffset? PreviousSecretUntil,
    bool Enabled,
    string? DisabledReason,
    DateTimeOffset? FailingSince,
    string Position,
    DateTimeOffset CreatedAt,
    DateTimeOffset UpdatedAt);

/// <summary>One attempt to deliver one event to one webhook.</summary>
/// <param name="Id">Ascending with time of writing, per database (ignored when appending).</param>
/// <param name="ProgramId">The webhook's program.</param>
/// <param name="WebhookId">The webhook.</param>
/// <param name="DeliveryId">Names the delivery of one event to one webhook: every retry, and a redelivery, carries the same one.</param>
/// <param name="EventId">The event delivered.</param>
/// <param name="EventType">Its type ("points.earned").</param>
/// <param name="MemberId">The member it is about.</param>
/// <param name="Attempt">1 for the first attempt of this delivery by this node, then one more per retry.</param>
/// <param name="At">When the attempt started.</param>
/// <param name="StatusCode">The HTTP status the receiver answered; 0 when it did not answer (timeout, refused connection).</param>
/// <param name="LatencyMs">How long the attempt took.</param>
/// <param name="Error">Why it failed (bounded text); null when it succeeded.</param>
/// <param name="Manual">Whether an admin asked for it (a redelivery), rather than the dispatcher.</param>
public sealed record WebhookAttemptRow(
    long Id,
    string ProgramId,
    string WebhookId,
    string DeliveryId,
    string EventId,
    string EventType,
    string MemberId,
    int Attempt,
    DateTimeOffset At,
    int StatusCode,
    int LatencyMs,
    string? Error,
    bool Manual);

/// <summary>
/// Webhook subscriptions, their delivery positions and leases, and the delivery log, in the
/// engine's database so that every node of a cluster sees them. Configuration changes (by the API)
/// and delivery progress (by the node holding the lease) write different columns, so neither
/// overwrites the other. Implementations are thread-safe.
/// </summary>
public interface IWebhookStore
{
    /// <summary>Attempts kept per webhook; older ones are deleted as new ones are appended.</summary>
    const int AttemptsKeptPerWebhook = 1_000;

    /// <summary>Inserts a subscription; false when the (program, id) is taken (nothing is changed then).</summary>
    Task<bool> TryInsertAsync(WebhookRow row, CancellationToken cancellationToken);

    /// <summary>One subscription, or null.</summary>
    Task<WebhookRow?> GetAsync(string programId, string webhookId, CancellationToken cancellationToken);

    /// <summary>A program's subscriptions, by id.</summary>
    Task<IReadOnlyList<WebhookRow>> ListAsync(string programId, CancellationToken cancellationToken);

    /// <summary>
    /// Changes the URL, types and enabled state. Enabling clears the disabled reason and
    /// <see cref="WebhookRow.FailingSince"/>. Disabling keeps the lease (the holder's next save
    /// fails; nobody else claims it before the lease ends). False when there is no such subscription.
    /// </summary>
    Task<bool> UpdateConfigAsync(string programId, string webhookId, string url, string types, bool enabled, string? disabledReason, DateTimeOffset at, CancellationToken cancellationToken);

    /// <summary>
    /// Makes <paramref name="newSecret"/> the signing secret with the next key version; the current
    /// one keeps signing until <paramref name="previousUntil"/>. With <paramref name="expectedKeyVersion"/>,
    /// only from that version. False when there is no such subscription, or it is at another version
    /// (nothing is changed then).
    /// </summary>
    Task<bool> RotateSecretAsync(string programId, string webhookId, string newSecret, DateTimeOffset previousUntil, int? expectedKeyVersion, DateTimeOffset at, CancellationToken cancellationToken);

    /// <summary>Deletes a subscription and its delivery log; false when there was none.</summary>
    Task<bool> DeleteAsync(string programId, string webhookId, CancellationToken cancellationToken);

    /// <summary>
    /// Takes the lease of up to <paramref name="limit"/> enabled subscriptions that no node holds
    /// (their lease ended before <paramref name="now"/>) or that <paramref name="owner"/> already
    /// holds, until <paramref name="leaseUntil"/>, and returns them. Two nodes claiming at once
    /// never both get one subscription. Subscriptions the owner already holds come last, so that
    /// they never crowd free ones out of the limit; the others come in the order they have been
    /// waiting (never held first, then by when their lease ended), so that subscriptions taking
    /// turns on a full node (<see cref="YieldAsync"/>) each get theirs.
    /// </summary>
    Task<IReadOnlyList<WebhookRow>> ClaimAsync(string owner, DateTimeOffset now, DateTimeOffset leaseUntil, int limit, CancellationToken cancellationToken);

    /// <summary>
    /// Records delivery progress and extends the lease, only while <paramref name="owner"/> holds it:
    /// false when the lease was lost (another node took it, or the subscription was deleted or
    /// disabled), and then nothing is written.
    /// </summary>
    Task<bool> SaveProgressAsync(string programId, string webhookId, string owner, string position, DateTimeOffset? failingSince, DateTimeOffset leaseUntil, CancellationToken cancellationToken);

    /// <summary>
    /// Disables the subscription with a reason, only while <paramref name="owner"/> holds its lease
    /// and its configuration is still the one last changed at <paramref name="seenUpdatedAt"/> (a
    /// failure seen under an older one, before a re-enable or a new URL, disables nothing); ends the lease.
    /// </summary>
    Task<bool> DisableAsync(string programId, string webhookId, string owner, DateTimeOffset seenUpdatedAt, string reason, DateTimeOffset at, CancellationToken cancellationToken);

    /// <summary>Ends <paramref name="owner"/>'s lease (a node stopping), so another node may claim the subscription at once.</summary>
    Task ReleaseAsync(string programId, string webhookId, string owner, CancellationToken cancellationToken);

    /// <summary>
    /// Ends <paramref name="owner"/>'s lease to give a full node's place to a subscription that
    /// waits: the lease is marked ended at <paramref name="at"/>, so the subscription queues
    /// behind those that waited longer (see <see cref="ClaimAsync"/>).
    /// </summary>
    Task YieldAsync(string programId, string webhookId, string owner, DateTimeOffset at, CancellationToken cancellationToken);

    /// <summary>Enabled subscriptions that no node holds at <paramref name="now"/>: waiting for a node with room.</summary>
    Task<int> CountWaitingAsync(DateTimeOffset now, CancellationToken cancellationToken);

    /// <summary>
    /// Appends attempts to the log, keeping the newest <see cref="AttemptsKeptPerWebhook"/> per
    /// webhook; attempts of a subscription deleted meanwhile are dropped.
    /// </summary>
    Task AppendAttemptsAsync(IReadOnlyList<WebhookAttemptRow> attempts, CancellationToken cancellationToken);

    /// <summary>Up to <paramref name="limit"/> attempts of a webhook with an id below <paramref name="beforeId"/>, newest first.</summary>
    Task<IReadOnlyList<WebhookAttemptRow>> ReadAttemptsAsync(string programId, string webhookId, long beforeId, int limit, CancellationToken cancellationToken);
}

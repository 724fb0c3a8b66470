using System.Globalization;
using System.Security.Cryptography;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Host.Access;
using Loyalty.Host.Events;
using Loyalty.Host.Grpc;
using Loyalty.Storage;
using Microsoft.Extensions.Options;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Webhooks;

/// <summary>Webhook subscriptions over gRPC. The interceptor has already checked the key, its scope and program.</summary>
public sealed class WebhooksService(
    IWebhookStore store,
    ILedgerStore ledger,
    WebhookSender sender,
    WebhookDispatcher dispatcher,
    IGrainFactory grains,
    IOptions<WebhookOptions> options,
    TimeProvider clock,
    ILogger<WebhooksService> logger) : V1.Webhooks.WebhooksBase
{
    /// <summary>Characters a URL may have.</summary>
    public const int UrlLengthMax = 2_000;

    /// <summary>The grace of a rotated secret when none is asked for, and the longest allowed.</summary>
    public static readonly TimeSpan GraceDefault = TimeSpan.FromHours(24), GraceMax = TimeSpan.FromDays(7);

    private readonly WebhookOptions _options = options.Value;

    /// <inheritdoc />
    public override async Task<V1.CreatedWebhook> CreateWebhook(V1.CreateWebhookRequest request, ServerCallContext context)
    {
        string id = request.WebhookId.Length == 0 ? "wh-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6)) : request.WebhookId;
        GrainCalls.Require(LoyaltyIds.Check(request.ProgramId, "program_id") ?? LoyaltyIds.Check(id, "webhook_id") ?? CheckUrl(request.Url));
        string types = TypesText(request.EventTypes);
        if (await grains.GetGrain<IProgramGrain>(request.ProgramId).Get() is null)
        {
            throw new RpcException(new Status(StatusCode.NotFound, $"program '{request.ProgramId}' not found; create it first"));
        }

        if ((await store.ListAsync(request.ProgramId, context.CancellationToken)).Count >= _options.WebhooksPerProgramMax)
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition, $"a program may have at most {_options.WebhooksPerProgramMax} webhooks; delete one first"));
        }

        // Delivery starts after what is committed now: a new subscription is not sent the program's whole history.
        EventPosition end = await ledger.ReadEventsEndAsync(request.ProgramId, context.CancellationToken);
        string secret = NewSecret();
        DateTimeOffset now = clock.GetUtcNow();
        var row = new WebhookRow(request.ProgramId, id, request.Url, types, secret, 1, null, null, Enabled: true, null, null,
            EventCursor.Format(end, 1), now, now);
        if (!await store.TryInsertAsync(row, context.CancellationToken))
        {
            throw new RpcException(new Status(StatusCode.AlreadyExists, $"webhook '{id}' already exists in this program"));
        }

        return new V1.CreatedWebhook { Webhook = ToMessage(row), Secret = secret };
    }

    /// <inheritdoc />
    public override async Task<V1.Webhook> GetWebhook(V1.WebhookRequest request, ServerCallContext context) =>
        ToMessage(await FindAsync(request.ProgramId, request.WebhookId, context.CancellationToken));

    /// <inheritdoc />
    public override async Task<V1.ListWebhooksResponse> ListWebhooks(V1.ListWebhooksRequest request, ServerCallContext context)
    {
        GrainCalls.Require(LoyaltyIds.Check(request.ProgramId, "program_id"));
        var response = new V1.ListWebhooksResponse();
        response.Webhooks.AddRange((await store.ListAsync(request.ProgramId, context.CancellationToken)).Select(ToMessage));
        return response;
    }

    /// <inheritdoc />
    public override async Task<V1.Webhook> UpdateWebhook(V1.UpdateWebhookRequest request, ServerCallContext context)
    {
        WebhookRow row = await FindAsync(request.ProgramId, request.WebhookId, context.CancellationToken);
        string url = request.Url.Length == 0 ? row.Url : request.Url;
        GrainCalls.Require(CheckUrl(url));
        string types = request.ReplaceEventTypes ? TypesText(request.EventTypes) : row.Types;
        bool enabled = request.HasEnabled ? request.Enabled : row.Enabled;
        string? reason = enabled ? null
            : request.HasEnabled && row.Enabled ? $"disabled by key {Caller.Of(context).Key.KeyId} at {clock.GetUtcNow():u}"
            : row.DisabledReason;
        await store.UpdateConfigAsync(row.ProgramId, row.WebhookId, url, types, enabled, reason, clock.GetUtcNow(), context.CancellationToken);
        return ToMessage(await FindAsync(request.ProgramId, request.WebhookId, context.CancellationToken));
    }

    /// <inheritdoc />
    public override async Task<V1.CreatedWebhook> RotateWebhookSecret(V1.RotateWebhookSecretRequest request, ServerCallContext context)
    {
        GrainCalls.Require(request.GraceSeconds < 0 || request.GraceSeconds > GraceMax.TotalSeconds
            ? $"grace_seconds must be 0..{GraceMax.TotalSeconds:0} (0 means {GraceDefault.TotalHours:0} hours)"
            : null);
        GrainCalls.Require(request.HasExpectedKeyVersion && request.ExpectedKeyVersion < 1 ? "expected_key_version must be 1 or more (key versions start at 1)" : null);
        WebhookRow row = await FindAsync(request.ProgramId, request.WebhookId, context.CancellationToken);
        TimeSpan grace = request.GraceSeconds == 0 ? GraceDefault : TimeSpan.FromSeconds(request.GraceSeconds);
        string secret = NewSecret();
        DateTimeOffset now = clock.GetUtcNow();
        int? expected = request.HasExpectedKeyVersion ? request.ExpectedKeyVersion : null;
        if (await store.RotateSecretAsync(row.ProgramId, row.WebhookId, secret, now + grace, expected, now, context.CancellationToken))
        {
            return new V1.CreatedWebhook { Webhook = ToMessage(await FindAsync(row.ProgramId, row.WebhookId, context.CancellationToken)), Secret = secret };
        }

        return AlreadyRotated(await FindAsync(row.ProgramId, row.WebhookId, context.CancellationToken), expected);
    }

    /// <summary>
    /// The answer to a rotation from a version the secret has already left. One step on is the
    /// rotation asked for, already made (a resend whose first answer was lost, or another admin's
    /// rotation from the same version): its secret is answered, and rotating again would retire the
    /// secret receivers still check before they ever saw the new one. Further on, it is refused.
    /// </summary>
    private static V1.CreatedWebhook AlreadyRotated(WebhookRow row, int? expected)
    {
        if (expected is int from && row.KeyVersion == from + 1)
        {
            return new V1.CreatedWebhook { Webhook = ToMessage(row), Secret = row.Secret };
        }

        throw new RpcException(new Status(StatusCode.FailedPrecondition,
            $"the secret is at key version {row.KeyVersion}, not expected_key_version {expected}; nothing was rotated"));
    }

    /// <inheritdoc />
    public override async Task<V1.Webhook> DeleteWebhook(V1.WebhookRequest request, ServerCallContext context)
    {
        WebhookRow row = await FindAsync(request.ProgramId, request.WebhookId, context.CancellationToken);
        await store.DeleteAsync(row.ProgramId, row.WebhookId, context.CancellationToken);
        return ToMessage(row);
    }

    /// <inheritdoc />
    public override async Task<V1.ListWebhookDeliveriesResponse> ListWebhookDeliveries(V1.ListWebhookDeliveriesRequest request, ServerCallContext context)
    {
        GrainCalls.Require(request.PageSize is < 0 or > 500 ? "page_size must be 0..500" : null);
        long before = long.MaxValue;
        if (request.PageToken.Length > 0)
        {
            GrainCalls.Require(long.TryParse(request.PageToken, NumberStyles.None, CultureInfo.InvariantCulture, out before) ? null : "page_token is not one this engine gave out");
        }

        WebhookRow row = await FindAsync(request.ProgramId, request.WebhookId, context.CancellationToken);
        int size = request.PageSize == 0 ? 50 : request.PageSize;
        IReadOnlyList<WebhookAttemptRow> attempts = await store.ReadAttemptsAsync(row.ProgramId, row.WebhookId, before, size, context.CancellationToken);
        var response = new V1.ListWebhookDeliveriesResponse
        {
            NextPageToken = attempts.Count == size ? attempts[^1].Id.ToString(CultureInfo.InvariantCulture) : "",
        };
        response.Deliveries.AddRange(attempts.Select(ToMessage));
        return response;
    }

    /// <inheritdoc />
    public override async Task<V1.WebhookDelivery> RedeliverWebhookEvent(V1.RedeliverRequest request, ServerCallContext context)
    {
        WebhookRow row = await FindAsync(request.ProgramId, request.WebhookId, context.CancellationToken);
        GrainCalls.Require(LoyaltyEvents.ParseId(request.EventId) is null
            ? $"event_id '{Bounded.Echo(request.EventId)}' is not an event id (member/sequence)"
            : null);
        (string member, long sequence, int index) = LoyaltyEvents.ParseId(request.EventId)!.Value;
        PositionedEntry? entry = await ledger.ReadEventAsync(row.ProgramId, member, sequence, context.CancellationToken);
        if (entry is null || index >= LoyaltyEvents.CountOf(entry.Entry))
        {
            throw new RpcException(new Status(StatusCode.NotFound, $"no event '{Bounded.Echo(request.EventId)}' in this program"));
        }

        V1.Event e = LoyaltyEvents.ToEvent(entry, index);
        // Neither the attempt nor its log entry follows the caller's cancellation: a request that
        // may have reached the receiver is logged (the attempt's own time limit bounds it, and a
        // stopping node's wait).
        Task<WebhookAttemptRow> attempt = dispatcher.TryRunManual(abandon => RedeliverAsync(row, e, abandon))
            ?? throw new RpcException(new Status(StatusCode.Unavailable, "this node is stopping; ask again, another node will answer"));
        return ToMessage(await attempt);
    }

    /// <summary>One attempt of a redelivery by hand, logged; <paramref name="abandon"/> is the stopping node's (see <see cref="WebhookDispatcher.TryRunManual"/>).</summary>
    private async Task<WebhookAttemptRow> RedeliverAsync(WebhookRow row, V1.Event e, CancellationToken abandon)
    {
        DeliveryOutcome outcome = await sender.SendAsync(row, e, abandon);
        var attempt = new WebhookAttemptRow(0, row.ProgramId, row.WebhookId, WebhookSender.DeliveryIdOf(row.WebhookId, e.EventId), e.EventId, e.Type, e.MemberId,
            1, clock.GetUtcNow(), outcome.StatusCode, outcome.LatencyMs, outcome.Error, Manual: true);
        await store.AppendAttemptsAsync([attempt], CancellationToken.None);
        logger.LogInformation("Webhook {ProgramId}/{WebhookId}: {EventId} redelivered by hand, status {StatusCode}", row.ProgramId, row.WebhookId, e.EventId, outcome.StatusCode);
        return attempt;
    }

    /// <summary>A new signing secret: 256 random bits.</summary>
    private static string NewSecret() => "whsec_" + Base64Url(RandomNumberGenerator.GetBytes(32));

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    private async Task<WebhookRow> FindAsync(string programId, string webhookId, CancellationToken cancellationToken)
    {
        GrainCalls.Require(LoyaltyIds.Check(programId, "program_id") ?? LoyaltyIds.Check(webhookId, "webhook_id"));
        return await store.GetAsync(programId, webhookId, cancellationToken)
            ?? throw new RpcException(new Status(StatusCode.NotFound, $"no webhook '{webhookId}' in this program"));
    }

    /// <summary>Null when the URL may receive deliveries; otherwise why not.</summary>
    private string? CheckUrl(string url)
    {
        if (url.Length == 0 || url.Length > UrlLengthMax || !Uri.TryCreate(url, UriKind.Absolute, out Uri? uri))
        {
            return $"url must be an absolute URL of at most {UrlLengthMax} characters";
        }

        if (uri.Scheme != Uri.UriSchemeHttps && !(uri.Scheme == Uri.UriSchemeHttp && _options.AllowHttp))
        {
            return _options.AllowHttp ? "url must be http or https" : "url must be https (plain http is off: Webhooks:AllowHttp)";
        }

        return uri.UserInfo.Length > 0 ? "url must not carry a user name or password"
            : uri.Fragment.Length > 0 ? "url must not have a fragment"
            : _options.AllowPrivateTargets ? null
            : WebhookTargets.Refusal(uri);
    }

    /// <summary>The types as stored (comma-separated, sorted, distinct); unknown types are refused.</summary>
    private static string TypesText(IReadOnlyCollection<string> types) =>
        EventsService.ParseTypes(types) is { } set ? string.Join(',', set.Order(StringComparer.Ordinal)) : "";

    private static V1.Webhook ToMessage(WebhookRow row)
    {
        var message = new V1.Webhook
        {
            ProgramId = row.ProgramId,
            WebhookId = row.WebhookId,
            Url = row.Url,
            Enabled = row.Enabled,
            DisabledReason = row.DisabledReason ?? "",
            FailingSince = row.FailingSince is { } failing ? Timestamp.FromDateTimeOffset(failing) : null,
            KeyVersion = row.KeyVersion,
            PreviousSecretUntil = row.PreviousSecretUntil is { } until ? Timestamp.FromDateTimeOffset(until) : null,
            DeliveredCursor = row.Position,
            CreatedAt = Timestamp.FromDateTimeOffset(row.CreatedAt),
            UpdatedAt = Timestamp.FromDateTimeOffset(row.UpdatedAt),
        };
        message.EventTypes.AddRange(row.Types.Split(',', StringSplitOptions.RemoveEmptyEntries));
        return message;
    }

    private static V1.WebhookDelivery ToMessage(WebhookAttemptRow attempt) => new()
    {
        DeliveryId = attempt.DeliveryId,
        EventId = attempt.EventId,
        EventType = attempt.EventType,
        MemberId = attempt.MemberId,
        Attempt = attempt.Attempt,
        At = Timestamp.FromDateTimeOffset(attempt.At),
        StatusCode = attempt.StatusCode,
        LatencyMs = attempt.LatencyMs,
        Error = attempt.Error ?? "",
        Manual = attempt.Manual,
    };
}

using System.Collections.Frozen;

namespace Loyalty.Host.Access;

/// <summary>What a call costs against a key's quota.</summary>
public enum CallKind
{
    /// <summary>One unary call.</summary>
    Unary,

    /// <summary>One purchase (<c>Accrue</c>).</summary>
    Purchase,

    /// <summary>A stream: counts against the streams a key may hold open; its purchases are counted one by one.</summary>
    Stream,
}

/// <summary>Who may make a call, and how it is counted and recorded.</summary>
/// <param name="Scopes">The scopes that may make it; <see cref="Scopes.None"/> with <paramref name="Anonymous"/> for calls without a key.</param>
/// <param name="ProgramScoped">Whether the request names a program the key must belong to (<c>IProgramScoped</c>).</param>
/// <param name="Kind">How it counts against the key's quota.</param>
/// <param name="Audited">Whether the call goes to the audit trail with the key that made it.</param>
/// <param name="Anonymous">Whether the call needs no key at all (health probes only).</param>
public sealed record CallRule(Scopes Scopes, bool ProgramScoped, CallKind Kind, bool Audited, bool Anonymous = false);

/// <summary>
/// The table of calls and the scopes that may make them; the README's table is this one. A
/// method not listed is refused to everyone (a test checks that every method of the API is listed).
/// </summary>
public static class AccessPolicy
{
    private const Scopes Reads = Scopes.Operator | Scopes.Admin | Scopes.Support | Scopes.Reader;
    private const Scopes Till = Scopes.Operator | Scopes.Pos;
    private const Scopes Staff = Scopes.Operator | Scopes.Support;
    private const Scopes Owners = Scopes.Operator | Scopes.Admin;

    private static readonly FrozenDictionary<string, CallRule> Table = new Dictionary<string, CallRule>
    {
        ["/loyalty.v1.ProgramAdmin/PutProgram"] = new(Owners, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.ProgramAdmin/GetProgram"] = new(Scopes.Any, ProgramScoped: true, CallKind.Unary, Audited: false),

        ["/loyalty.v1.Members/Enroll"] = new(Till | Scopes.Support, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Members/GetMember"] = new(Scopes.Any, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Members/ListLedger"] = new(Reads, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Members/GetReferralCode"] = new(Scopes.Any, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Members/SetMemberFlags"] = new(Staff, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Members/AdjustPoints"] = new(Staff, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Members/RecordFeedback"] = new(Till | Scopes.Support, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Members/BookBonusDay"] = new(Till | Scopes.Support, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Members/ChooseCause"] = new(Till | Scopes.Support, ProgramScoped: true, CallKind.Unary, Audited: false),

        // Membership payments come from the retailer's billing (a till or web shop key); support may start a trial or cancel.
        ["/loyalty.v1.Members/ConfirmMembershipPayment"] = new(Till, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Members/StartMembershipTrial"] = new(Till | Scopes.Support, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Members/CancelMembership"] = new(Till | Scopes.Support, ProgramScoped: true, CallKind.Unary, Audited: true),

        // Trade-ins are handed in at a till; inspection (which gives credit) is for the store's staff keys too.
        ["/loyalty.v1.Members/SubmitTradeIn"] = new(Till | Scopes.Support, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Members/InspectTradeIn"] = new(Till | Scopes.Support, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Members/SetReferrer"] = new(Staff, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Members/SetProfile"] = new(Staff, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Members/EraseMember"] = new(Staff, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Members/MergeMembers"] = new(Staff, ProgramScoped: true, CallKind.Unary, Audited: true),

        ["/loyalty.v1.Redemptions/Redeem"] = new(Till, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Redemptions/Reserve"] = new(Till, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Redemptions/CommitReservation"] = new(Till, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Redemptions/CancelReservation"] = new(Till, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Redemptions/ListRewards"] = new(Scopes.Any, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Redemptions/ListReservations"] = new(Scopes.Any, ProgramScoped: true, CallKind.Unary, Audited: false),

        ["/loyalty.v1.Purchases/Accrue"] = new(Till, ProgramScoped: true, CallKind.Purchase, Audited: false),
        ["/loyalty.v1.Purchases/Ingest"] = new(Till, ProgramScoped: false, CallKind.Stream, Audited: false),
        ["/loyalty.v1.Purchases/IngestBatches"] = new(Till, ProgramScoped: false, CallKind.Stream, Audited: false),
        ["/loyalty.v1.Purchases/Return"] = new(Till, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Purchases/Quote"] = new(Till | Scopes.Reader, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Purchases/GetTransaction"] = new(Scopes.Any, ProgramScoped: true, CallKind.Unary, Audited: false),

        ["/loyalty.v1.Access/CreateKey"] = new(Owners, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Access/ListKeys"] = new(Owners, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Access/RevokeKey"] = new(Owners, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Access/WhoAmI"] = new(Scopes.Any, ProgramScoped: false, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Access/ListAudit"] = new(Owners | Scopes.Reader, ProgramScoped: true, CallKind.Unary, Audited: false),

        // Events carry what members did: for those who may read members, not for tills.
        ["/loyalty.v1.Events/Subscribe"] = new(Reads, ProgramScoped: true, CallKind.Stream, Audited: false),

        ["/loyalty.v1.Webhooks/CreateWebhook"] = new(Owners, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Webhooks/GetWebhook"] = new(Owners, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Webhooks/ListWebhooks"] = new(Owners, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Webhooks/UpdateWebhook"] = new(Owners, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Webhooks/RotateWebhookSecret"] = new(Owners, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Webhooks/DeleteWebhook"] = new(Owners, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Webhooks/ListWebhookDeliveries"] = new(Owners, ProgramScoped: true, CallKind.Unary, Audited: false),
        ["/loyalty.v1.Webhooks/RedeliverWebhookEvent"] = new(Owners, ProgramScoped: true, CallKind.Unary, Audited: true),
        ["/loyalty.v1.Reports/GetProgramReport"] = new(Owners | Scopes.Reader, ProgramScoped: true, CallKind.Unary, Audited: false),

        // Health probes come from load balancers and orchestrators, which hold no key; the answer
        // (serving or not) says nothing about any program.
        ["/grpc.health.v1.Health/Check"] = new(Scopes.None, ProgramScoped: false, CallKind.Unary, Audited: false, Anonymous: true),
        ["/grpc.health.v1.Health/Watch"] = new(Scopes.None, ProgramScoped: false, CallKind.Stream, Audited: false, Anonymous: true),
        ["/grpc.health.v1.Health/List"] = new(Scopes.None, ProgramScoped: false, CallKind.Unary, Audited: false, Anonymous: true),

        // Reflection describes the API to any key holder; without a key it answers nothing.
        ["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"] = new(Scopes.Any, ProgramScoped: false, CallKind.Stream, Audited: false),
        ["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"] = new(Scopes.Any, ProgramScoped: false, CallKind.Stream, Audited: false),
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>Every listed method and its rule.</summary>
    public static IReadOnlyDictionary<string, CallRule> All => Table;

    /// <summary>The rule of a method (its full name, "/package.Service/Method"), or null: nobody may call it.</summary>
    public static CallRule? For(string method) => Table.GetValueOrDefault(method);
}

using Loyalty.Api;
using Loyalty.Storage;
using Microsoft.Extensions.Options;
using Orleans.Runtime;

namespace Loyalty.Host.Access;

/// <summary>
/// Loads the keys once the schema is migrated, makes sure an operator key exists, and keeps the
/// keys refreshed while the silo runs. A node that cannot load its keys does not start.
/// </summary>
internal sealed partial class AccessLifecycle(
    KeyRegistry registry,
    IAccessStore store,
    IOptions<AuthOptions> options,
    TimeProvider clock,
    ILogger<AccessLifecycle> logger) : ILifecycleParticipant<ISiloLifecycle>
{
    private readonly CancellationTokenSource _stop = new();
    private Task _refreshes = Task.CompletedTask;

    public void Participate(ISiloLifecycle lifecycle) =>
        // After RuntimeInitialize, where the ledger migrates the schema the keys live in.
        lifecycle.Subscribe(nameof(AccessLifecycle), ServiceLifecycleStage.ApplicationServices, StartAsync, StopAsync);

    private async Task StartAsync(CancellationToken cancellationToken)
    {
        await registry.RefreshAsync(cancellationToken);
        await BootstrapAsync(cancellationToken);
        _refreshes = registry.RunRefreshesAsync(_stop.Token);
    }

    private async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stop.CancelAsync();
        try
        {
            await _refreshes;
        }
        catch (OperationCanceledException)
        {
            // Stopped as asked.
        }
    }

    /// <summary>Stores the configured operator key, or, on the first start of an empty database, makes one and writes it to the key file.</summary>
    private async Task BootstrapAsync(CancellationToken cancellationToken)
    {
        AuthOptions auth = options.Value;
        if (auth.BootstrapOperatorKey.Length > 0)
        {
            await StoreConfiguredKeyAsync(auth.BootstrapOperatorKey.Trim(), cancellationToken);
            return;
        }

        if (registry.List("", includeRevoked: true).Count > 0 || (await store.ReadKeysChangedSinceAsync(null, cancellationToken)).Keys.Count > 0)
        {
            return;
        }

        // Stored only while no operator key works, checked under the key lock: of nodes starting
        // at once on an empty database, one makes the key and the others find it.
        (_, AccessKey? key, string token) = await registry.CreateAsync("", AccessScope.Operator, [], "first operator key", expiresAt: null, "bootstrap",
            heldToDayAllowance: false, cancellationToken, onlyIfNoneWorks: true);
        if (key is null)
        {
            LogOperatorKeyMadeElsewhere();
            return;
        }

        string path = Path.GetFullPath(auth.OperatorKeyFile);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        // A new file, readable by the owner only from its first byte, then moved over any old
        // one (a move replaces a symbolic link rather than writing through it).
        string fresh = path + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        var write = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            write.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        await using (var file = new StreamWriter(fresh, write))
        {
            await file.WriteAsync(token);
        }

        File.Move(fresh, path, overwrite: true);

        LogOperatorKeyWritten(key.KeyId, path);
    }

    private async Task StoreConfiguredKeyAsync(string token, CancellationToken cancellationToken)
    {
        if (!KeyTokens.TryParse(token, out string keyId, out string secret))
        {
            throw new InvalidOperationException($"Auth:BootstrapOperatorKey is not a key: expected {KeyTokens.Prefix}<16 hex digits>.<43 base64url characters>.");
        }

        if (registry.Find(keyId) is { } stored)
        {
            RequireSame(stored, keyId, secret);
            return;
        }

        var row = new AccessKeyRow(keyId, "", AccessScope.Operator.ToStored(), "", "configured operator key", KeyTokens.Hash(secret),
            clock.GetUtcNow(), "configuration", ExpiresAt: null, RevokedAt: null);
        KeyInsert outcome = await store.InsertKeyAsync(row, allowance: null, cancellationToken);
        await registry.RefreshAsync(cancellationToken);
        if (outcome == KeyInsert.Inserted)
        {
            LogConfiguredKeyStored(keyId);
        }
        else if (registry.Find(keyId) is { } storedMeanwhile)
        {
            // Stored by a node started at the same moment: with this secret and scope, or this
            // configuration is not the one the other node has.
            RequireSame(storedMeanwhile, keyId, secret);
        }
        else
        {
            // Its row is there, but no node holds it: it ended (was revoked, or expired) longer ago
            // than keys are kept. It stays ended; storing it again would revive a key taken out of use.
            LogConfiguredKeyEnded(keyId);
        }
    }

    private static void RequireSame(AccessKey stored, string keyId, string secret)
    {
        if (!stored.HasSecret(secret) || stored.Scope != AccessScope.Operator)
        {
            throw new InvalidOperationException($"Auth:BootstrapOperatorKey names key {keyId}, which is stored with another secret or scope.");
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "The configured operator key {KeyId} was revoked or expired long ago; it is not stored again. Configure another in Auth:BootstrapOperatorKey, or none")]
    private partial void LogConfiguredKeyEnded(string keyId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "No API key existed: made operator key {KeyId} and wrote it to {Path} (readable by this user only). Send it as 'authorization: Bearer <key>'")]
    private partial void LogOperatorKeyWritten(string keyId, string path);

    [LoggerMessage(Level = LogLevel.Information, Message = "No API key existed when this node started, but another node made the first operator key meanwhile; use that node's key file")]
    private partial void LogOperatorKeyMadeElsewhere();

    [LoggerMessage(Level = LogLevel.Information, Message = "Stored the configured operator key {KeyId}")]
    private partial void LogConfiguredKeyStored(string keyId);
}

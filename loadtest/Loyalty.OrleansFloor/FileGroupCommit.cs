using System.Diagnostics;
using System.Runtime.InteropServices;
using HdrHistogram;
using Microsoft.Win32.SafeHandles;

namespace Loyalty.OrleansFloor;

/// <summary>
/// The disk's own floor for a durable answer: an ideal group commit with nothing of a database in
/// it. One thread takes every entry waiting, writes them (<see cref="EntryBytes"/> each) at the
/// end of a log file whose blocks were all written and synced beforehand, and makes them durable
/// with one <c>fdatasync</c>. So a batch writes only sequential data: no index page, no
/// checkpoint, no change to the file's size or extents that the sync would also have to journal.
/// Whatever a real ledger adds, its answer cannot come sooner than this one. Linux only (the sync
/// is <c>fdatasync</c>); the folder must be on the disk under test, not a tmpfs.
/// </summary>
internal sealed partial class FileGroupCommit : IDisposable
{
    /// <summary>What each entry writes: about a purchase's earn row with its details.</summary>
    internal const int EntryBytes = 300;

    /// <summary>The log's size; writing wraps around to its start (64 MiB last about 100 s at 2,000 entries/s).</summary>
    private const int FileBytes = 64 << 20;

    /// <summary>The most entries written by one write call (a larger batch takes several, then one sync).</summary>
    private const int WriteEntriesMax = 4096;

    /// <summary>The longest duration the sync histogram holds; a longer sync is recorded as this.</summary>
    private static readonly long SyncMicrosMax = (long)TimeSpan.FromSeconds(60).TotalMicroseconds;

    private readonly SafeFileHandle _file;
    private readonly byte[] _buffer = new byte[EntryBytes * WriteEntriesMax];
    private readonly object _gate = new();
    private readonly Thread _writer;
    /// <summary>Guards <see cref="_syncMicros"/>, which <see cref="ForgetSyncs"/> replaces.</summary>
    private readonly object _syncsGate = new();
    private LongHistogram _syncMicros = new(SyncMicrosMax, 3);
    private List<TaskCompletionSource<bool>> _waiting = [];
    private List<TaskCompletionSource<bool>> _taken = [];
    private bool _stopping;

    /// <summary>Why the writer stopped, when a write or a sync failed: every later append fails with it.</summary>
    private Exception? _failed;
    private long _offset;
    private long _entries;
    private long _batches;

    /// <summary>
    /// Makes the log in <paramref name="folder"/> (written through and synced once) and starts its
    /// writer. The file's name is removed at once: the open handle keeps it, and nothing is left
    /// behind however the process ends.
    /// </summary>
    public FileGroupCommit(string folder)
    {
        string path = Path.Combine(folder, $"loyalty-floor-{Guid.NewGuid():N}.log");
        _file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite);
        File.Delete(path);
        try
        {
            // Not zeros: a file system that compresses, or keeps zeros as holes, would not write them.
            Random.Shared.NextBytes(_buffer);
            for (long at = 0; at < FileBytes; at += _buffer.Length)
            {
                RandomAccess.Write(_file, _buffer.AsSpan(0, (int)Math.Min(_buffer.Length, FileBytes - at)), at);
            }

            // A full sync once: the blocks, the size and the extents are on the disk before the first entry.
            RandomAccess.FlushToDisk(_file);
        }
        catch
        {
            _file.Dispose();
            throw;
        }

        _writer = new Thread(WriteLoop) { IsBackground = true, Name = "Floor log writer" };
        _writer.Start();
    }

    /// <summary>Entries made durable so far.</summary>
    public long Entries => Interlocked.Read(ref _entries);

    /// <summary>Syncs so far (one per batch).</summary>
    public long Batches => Interlocked.Read(ref _batches);

    /// <summary>Completes (true) when an entry written after this call is durable.</summary>
    public Task<bool> AppendAsync()
    {
        var written = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_stopping, this);
            if (_failed is not null)
            {
                return Task.FromException<bool>(_failed);
            }

            _waiting.Add(written);
            Monitor.Pulse(_gate);
        }

        return written.Task;
    }

    /// <summary>Starts the sync histogram afresh (the warm-up's syncs are not the run's).</summary>
    public void ForgetSyncs()
    {
        lock (_syncsGate)
        {
            _syncMicros = new LongHistogram(SyncMicrosMax, 3);
        }
    }

    /// <summary>The sync's duration at <paramref name="percentile"/>, in milliseconds.</summary>
    public double SyncMs(double percentile)
    {
        lock (_syncsGate)
        {
            return _syncMicros.TotalCount == 0 ? 0 : _syncMicros.GetValueAtPercentile(percentile) / 1000.0;
        }
    }

    private void WriteLoop()
    {
        try
        {
            while (TakeWaiting())
            {
                WriteAndSync();
                foreach (TaskCompletionSource<bool> written in _taken)
                {
                    written.TrySetResult(true);
                }

                _taken.Clear();
            }
        }
        catch (Exception e)
        {
            // The floor cannot go on: every append waiting or still to come fails with the reason,
            // so the run ends with it instead of hanging.
            lock (_gate)
            {
                _failed = e;
                _taken.AddRange(_waiting);
                _waiting.Clear();
            }

            foreach (TaskCompletionSource<bool> written in _taken)
            {
                written.TrySetException(e);
            }
        }
    }

    /// <summary>Waits for entries and takes all of them; false once stopping with none left.</summary>
    private bool TakeWaiting()
    {
        lock (_gate)
        {
            while (_waiting.Count == 0 && !_stopping)
            {
                Monitor.Wait(_gate);
            }

            if (_waiting.Count == 0)
            {
                return false;
            }

            (_waiting, _taken) = (_taken, _waiting);
            return true;
        }
    }

    /// <summary>Writes the taken entries and syncs them once.</summary>
    private void WriteAndSync()
    {
        for (int done = 0; done < _taken.Count; done += WriteEntriesMax)
        {
            Write(Math.Min(WriteEntriesMax, _taken.Count - done) * EntryBytes);
        }

        long started = Stopwatch.GetTimestamp();
        if (DataSync(_file) != 0)
        {
            throw new IOException($"fdatasync failed: error {Marshal.GetLastPInvokeError()}");
        }

        long micros = (long)Stopwatch.GetElapsedTime(started).TotalMicroseconds;
        lock (_syncsGate)
        {
            _syncMicros.RecordValue(Math.Min(micros, SyncMicrosMax));
        }

        Interlocked.Add(ref _entries, _taken.Count);
        Interlocked.Increment(ref _batches);
    }

    /// <summary>Writes <paramref name="bytes"/> at the log's end, from its start again when they would not fit.</summary>
    private void Write(int bytes)
    {
        if (_offset + bytes > FileBytes)
        {
            _offset = 0;
        }

        RandomAccess.Write(_file, _buffer.AsSpan(0, bytes), _offset);
        _offset += bytes;
    }

    /// <summary>Makes every entry written so far durable, then stops the writer and closes the log (which has no name left).</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            _stopping = true;
            Monitor.Pulse(_gate);
        }

        _writer.Join();
        _file.Dispose();
    }

    /// <summary>Linux's <c>fdatasync</c>: the file's data (and only the metadata needed to read it back) on the disk.</summary>
    private static int DataSync(SafeFileHandle file)
    {
        bool referenced = false;
        try
        {
            file.DangerousAddRef(ref referenced);
            return FdataSync(file.DangerousGetHandle().ToInt32());
        }
        finally
        {
            if (referenced)
            {
                file.DangerousRelease();
            }
        }
    }

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    private static partial int FdataSync(int fd);
}

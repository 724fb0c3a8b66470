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
/// Whatever a real ledger adds, its answer cannot come sooner than this one.
/// </summary>
internal sealed partial class FileGroupCommit : IDisposable
{
    /// <summary>What each entry writes: about a purchase's earn row with its details.</summary>
    internal const int EntryBytes = 300;

    /// <summary>The log's size; writing wraps around to its start (64 MiB last about 100 s at 2,000 entries/s).</summary>
    private const int FileBytes = 64 << 20;

    /// <summary>The most entries written by one write call (a larger batch takes several, then one sync).</summary>
    private const int WriteEntriesMax = 4096;

    private readonly string _path = Path.Combine(Path.GetTempPath(), $"loyalty-floor-{Guid.NewGuid():N}.log");
    private readonly SafeFileHandle _file;
    private readonly byte[] _buffer = new byte[EntryBytes * WriteEntriesMax];
    private readonly object _gate = new();
    private readonly Thread _writer;
    private readonly LongHistogram _syncMicros = new(TimeSpan.FromSeconds(60).Ticks / 10, 3);
    private List<TaskCompletionSource<bool>> _waiting = [];
    private List<TaskCompletionSource<bool>> _taken = [];
    private bool _stopping;
    private long _offset;
    private long _entries;
    private long _batches;

    /// <summary>Makes the log (written through and synced once) and starts its writer.</summary>
    public FileGroupCommit()
    {
        _file = File.OpenHandle(_path, FileMode.CreateNew, FileAccess.ReadWrite);
        for (long at = 0; at < FileBytes; at += _buffer.Length)
        {
            RandomAccess.Write(_file, _buffer.AsSpan(0, (int)Math.Min(_buffer.Length, FileBytes - at)), at);
        }

        // A full sync once: the blocks, the size and the extents are on the disk before the first entry.
        RandomAccess.FlushToDisk(_file);
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
            _waiting.Add(written);
            Monitor.Pulse(_gate);
        }

        return written.Task;
    }

    /// <summary>The sync's duration at <paramref name="percentile"/>, in milliseconds.</summary>
    public double SyncMs(double percentile)
    {
        lock (_syncMicros)
        {
            return _syncMicros.TotalCount == 0 ? 0 : _syncMicros.GetValueAtPercentile(percentile) / 1000.0;
        }
    }

    private void WriteLoop()
    {
        while (true)
        {
            lock (_gate)
            {
                while (_waiting.Count == 0 && !_stopping)
                {
                    Monitor.Wait(_gate);
                }

                if (_waiting.Count == 0)
                {
                    return;
                }

                (_waiting, _taken) = (_taken, _waiting);
            }

            for (int done = 0; done < _taken.Count; done += WriteEntriesMax)
            {
                Write(Math.Min(WriteEntriesMax, _taken.Count - done) * EntryBytes);
            }

            long started = Stopwatch.GetTimestamp();
            if (DataSync(_file) != 0)
            {
                throw new IOException($"fdatasync failed: error {Marshal.GetLastPInvokeError()}");
            }

            long micros = Stopwatch.GetElapsedTime(started).Ticks / 10;
            lock (_syncMicros)
            {
                _syncMicros.RecordValue(micros);
            }

            Interlocked.Add(ref _entries, _taken.Count);
            Interlocked.Increment(ref _batches);
            foreach (TaskCompletionSource<bool> written in _taken)
            {
                written.TrySetResult(true);
            }

            _taken.Clear();
        }
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

    /// <summary>Makes every entry written so far durable, then stops the writer and deletes the log.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            _stopping = true;
            Monitor.Pulse(_gate);
        }

        _writer.Join();
        _file.Dispose();
        File.Delete(_path);
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

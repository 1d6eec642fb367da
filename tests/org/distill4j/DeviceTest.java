package org.distill4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.logging.Handler;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import org.distill4j.backend.Backend;
import org.distill4j.backend.BackendUnavailableException;
import org.distill4j.backend.Backends;
import org.junit.jupiter.api.Test;

class DeviceTest {
    @Test
    void parsesTheNamesTheCommandLineUses() {
        assertEquals(Device.cpu(), Device.parse("cpu"));
        assertEquals(Device.cuda(0), Device.parse("cuda"));
        assertEquals(Device.cuda(3), Device.parse("CUDA:3"));
        assertEquals(Device.cudaEmu(), Device.parse("cuda-emu"));
        assertEquals("cuda:3", Device.cuda(3).toString());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Device.parse("tpu"));
        assertTrue(e.getMessage().contains("'tpu'"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Device.parse("cuda:x"));
        assertThrows(IllegalArgumentException.class, () -> Device.cuda(-1));
    }

    @Test
    void cudaEitherOpensOrNamesWhatIsMissing() {
        String why = Backends.cudaUnavailableReason(0);
        if (why == null) {
            try (Backend b = Backends.open(Device.cuda(0))) {
                assertEquals(Device.cuda(0), b.device());
            }
        } else {
            BackendUnavailableException e = assertThrows(BackendUnavailableException.class,
                    () -> Backends.open(Device.cuda(0)));
            assertTrue(e.getMessage().contains("libcuda.so.1") || e.getMessage().contains("libcudart.so.13")
                    || e.getMessage().contains("device"), "the message names the missing piece: " + e.getMessage());
        }
    }

    @Test
    void bestLogsItsChoiceInOneLineAndNeverHidesWhy() {
        List<LogRecord> records = new ArrayList<>();
        Handler h = new Handler() {
            @Override
            public void publish(LogRecord r) {
                records.add(r);
            }

            @Override
            public void flush() {}

            @Override
            public void close() {}
        };
        Logger log = Logger.getLogger("org.distill4j");
        log.addHandler(h);
        try {
            Device d = Device.best();
            String why = Backends.cudaUnavailableReason(0);
            assertEquals(why == null ? Device.cuda(0) : Device.cpu(), d);
            assertEquals(1, records.size());
            String line = records.get(0).getMessage();
            assertTrue(!line.contains("\n") && line.startsWith("distill4j: device " + d), line);
            if (why != null) assertTrue(line.contains(why), line);
        } finally {
            log.removeHandler(h);
        }
    }
}

// Sinter NPU instruction-set package.
// GENERATED from the sinter-isa crate (isa/src/svgen.rs): do not edit by hand.
// Regenerate with: SINTER_BLESS=1 cargo test -p sinter-isa sv_package

/* verilator lint_off UNUSEDPARAM */
package sinter_isa_pkg;

  // Architecture version (VERSION register).
  localparam logic [31:0] ARCH_VERSION = 32'h00010000;
  localparam int unsigned INSN_BITS = 256;
  localparam int unsigned INSN_BYTES = 32;

  // Default hardware configuration.
  localparam int unsigned DEFAULT_ROWS = 16;
  localparam int unsigned DEFAULT_COLS = 16;
  localparam int unsigned DEFAULT_ACT_DEPTH = 2048;
  localparam int unsigned DEFAULT_WGT_DEPTH = 256;
  localparam int unsigned DEFAULT_ACC_DEPTH = 1024;
  localparam int unsigned DEFAULT_OUT_DEPTH = 1024;
  localparam int unsigned DEFAULT_BUS_BYTES = 32;

  // Queue and buffer sizes of the microarchitecture (shared with the timing model).
  localparam int unsigned QUEUE_DEPTH = 32;
  localparam int unsigned FETCH_DEPTH = 32;
  localparam int unsigned FETCH_BURST = 8;
  localparam int unsigned DMA_MAX_BEATS = 32;

  // Opcodes.
  localparam logic [3:0] OP_LOAD = 4'd0;
  localparam logic [3:0] OP_GEMM = 4'd1;
  localparam logic [3:0] OP_VEC = 4'd2;
  localparam logic [3:0] OP_STORE = 4'd3;
  localparam logic [3:0] OP_SYNC = 4'd4;

  // Buffers (field `buffer` of load/store).
  localparam logic [1:0] BUF_ACT = 2'd0;
  localparam logic [1:0] BUF_WGT = 2'd1;
  localparam logic [1:0] BUF_ACC = 2'd2;
  localparam logic [1:0] BUF_OUT = 2'd3;

  // Modules (field `target` of sync).
  localparam logic [1:0] MOD_LOAD = 2'd0;
  localparam logic [1:0] MOD_COMPUTE = 2'd1;
  localparam logic [1:0] MOD_STORE = 2'd2;

  // GEMM modes (field `mode`): how the product combines with the accumulator.
  localparam logic [1:0] GEMM_OVERWRITE = 2'd0;
  localparam logic [1:0] GEMM_ADD = 2'd1;
  localparam logic [1:0] GEMM_MAX = 2'd2;

  // Vector-unit operations.
  localparam logic [3:0] VEC_REQUANT = 4'd0;

  // Dependency flag bits within `deps`.
  localparam int unsigned DEP_POP_PREV = 0;
  localparam int unsigned DEP_POP_NEXT = 1;
  localparam int unsigned DEP_PUSH_PREV = 2;
  localparam int unsigned DEP_PUSH_NEXT = 3;

  // Requantization: round half away from zero of (acc + bias) * mult >>> shift,
  // shift lanes read unsigned and clamped to MAX_SHIFT, then + zero point, clamp.
  localparam int unsigned MAX_SHIFT = 62;

  // Register map (byte offsets).
  localparam logic [7:0] REG_VERSION = 8'h00;
  localparam logic [7:0] REG_CONTROL = 8'h04;
  localparam logic [7:0] REG_STATUS = 8'h08;
  localparam logic [7:0] REG_ERROR_CODE = 8'h0c;
  localparam logic [7:0] REG_PROG_BASE = 8'h10;
  localparam logic [7:0] REG_PROG_LEN = 8'h14;
  localparam logic [7:0] REG_CYCLES_LO = 8'h18;
  localparam logic [7:0] REG_CYCLES_HI = 8'h1c;
  localparam logic [7:0] REG_MAC_ACTIVE_LO = 8'h20;
  localparam logic [7:0] REG_MAC_ACTIVE_HI = 8'h24;
  localparam logic [7:0] REG_INSNS_DONE = 8'h28;
  localparam logic [7:0] REG_ERROR_PC = 8'h2c;
  localparam logic [7:0] REG_CONFIG_ARRAY = 8'h30;
  localparam logic [7:0] REG_CONFIG_ACT_DEPTH = 8'h34;
  localparam logic [7:0] REG_CONFIG_WGT_DEPTH = 8'h38;
  localparam logic [7:0] REG_CONFIG_ACC_DEPTH = 8'h3c;
  localparam logic [7:0] REG_CONFIG_OUT_DEPTH = 8'h40;

  // CONTROL and STATUS bits.
  localparam int unsigned CONTROL_START_BIT = 0;
  localparam int unsigned CONTROL_RESET_BIT = 1;
  localparam int unsigned STATUS_BUSY_BIT = 0;
  localparam int unsigned STATUS_DONE_BIT = 1;
  localparam int unsigned STATUS_ERROR_BIT = 2;

  // Error codes (ERROR_CODE register).
  localparam logic [7:0] ERR_NONE = 8'd0;
  localparam logic [7:0] ERR_ILLEGAL_INSN = 8'd1;
  localparam logic [7:0] ERR_SRAM_BOUNDS = 8'd2;
  localparam logic [7:0] ERR_MISALIGNED = 8'd3;
  localparam logic [7:0] ERR_PROG_ALIGN = 8'd4;

  // Instruction formats: field positions, then one packed struct per format.
  localparam int unsigned F_DMA_OPCODE_LO = 0;
  localparam int unsigned F_DMA_OPCODE_W = 4;
  localparam int unsigned F_DMA_DEPS_LO = 4;
  localparam int unsigned F_DMA_DEPS_W = 4;
  localparam int unsigned F_DMA_BUFFER_LO = 8;
  localparam int unsigned F_DMA_BUFFER_W = 2;
  localparam int unsigned F_DMA_DRAM_BASE_LO = 32;
  localparam int unsigned F_DMA_DRAM_BASE_W = 32;
  localparam int unsigned F_DMA_SRAM_BASE_LO = 64;
  localparam int unsigned F_DMA_SRAM_BASE_W = 16;
  localparam int unsigned F_DMA_Y_SIZE_LO = 80;
  localparam int unsigned F_DMA_Y_SIZE_W = 16;
  localparam int unsigned F_DMA_X_SIZE_LO = 96;
  localparam int unsigned F_DMA_X_SIZE_W = 16;
  localparam int unsigned F_DMA_Y_STRIDE_LO = 112;
  localparam int unsigned F_DMA_Y_STRIDE_W = 32;
  localparam int unsigned F_DMA_X_STRIDE_LO = 144;
  localparam int unsigned F_DMA_X_STRIDE_W = 32;
  localparam int unsigned F_DMA_PAD_TOP_LO = 176;
  localparam int unsigned F_DMA_PAD_TOP_W = 8;
  localparam int unsigned F_DMA_PAD_BOTTOM_LO = 184;
  localparam int unsigned F_DMA_PAD_BOTTOM_W = 8;
  localparam int unsigned F_DMA_PAD_LEFT_LO = 192;
  localparam int unsigned F_DMA_PAD_LEFT_W = 8;
  localparam int unsigned F_DMA_PAD_RIGHT_LO = 200;
  localparam int unsigned F_DMA_PAD_RIGHT_W = 8;
  localparam int unsigned F_DMA_PAD_VALUE_LO = 208;
  localparam int unsigned F_DMA_PAD_VALUE_W = 8;
  localparam int unsigned F_GEMM_OPCODE_LO = 0;
  localparam int unsigned F_GEMM_OPCODE_W = 4;
  localparam int unsigned F_GEMM_DEPS_LO = 4;
  localparam int unsigned F_GEMM_DEPS_W = 4;
  localparam int unsigned F_GEMM_MODE_LO = 8;
  localparam int unsigned F_GEMM_MODE_W = 2;
  localparam int unsigned F_GEMM_WGT_LO = 16;
  localparam int unsigned F_GEMM_WGT_W = 16;
  localparam int unsigned F_GEMM_N_OUTER_LO = 32;
  localparam int unsigned F_GEMM_N_OUTER_W = 16;
  localparam int unsigned F_GEMM_N_INNER_LO = 48;
  localparam int unsigned F_GEMM_N_INNER_W = 16;
  localparam int unsigned F_GEMM_ACC_BASE_LO = 64;
  localparam int unsigned F_GEMM_ACC_BASE_W = 16;
  localparam int unsigned F_GEMM_ACC_STRIDE_OUTER_LO = 80;
  localparam int unsigned F_GEMM_ACC_STRIDE_OUTER_W = 16;
  localparam int unsigned F_GEMM_ACC_STRIDE_INNER_LO = 96;
  localparam int unsigned F_GEMM_ACC_STRIDE_INNER_W = 16;
  localparam int unsigned F_GEMM_ACT_BASE_LO = 112;
  localparam int unsigned F_GEMM_ACT_BASE_W = 16;
  localparam int unsigned F_GEMM_ACT_STRIDE_OUTER_LO = 128;
  localparam int unsigned F_GEMM_ACT_STRIDE_OUTER_W = 16;
  localparam int unsigned F_GEMM_ACT_STRIDE_INNER_LO = 144;
  localparam int unsigned F_GEMM_ACT_STRIDE_INNER_W = 16;
  localparam int unsigned F_VEC_OPCODE_LO = 0;
  localparam int unsigned F_VEC_OPCODE_W = 4;
  localparam int unsigned F_VEC_DEPS_LO = 4;
  localparam int unsigned F_VEC_DEPS_W = 4;
  localparam int unsigned F_VEC_OP_LO = 8;
  localparam int unsigned F_VEC_OP_W = 4;
  localparam int unsigned F_VEC_PARAM_LO = 16;
  localparam int unsigned F_VEC_PARAM_W = 16;
  localparam int unsigned F_VEC_N_OUTER_LO = 32;
  localparam int unsigned F_VEC_N_OUTER_W = 16;
  localparam int unsigned F_VEC_N_INNER_LO = 48;
  localparam int unsigned F_VEC_N_INNER_W = 16;
  localparam int unsigned F_VEC_SRC_BASE_LO = 64;
  localparam int unsigned F_VEC_SRC_BASE_W = 16;
  localparam int unsigned F_VEC_SRC_STRIDE_OUTER_LO = 80;
  localparam int unsigned F_VEC_SRC_STRIDE_OUTER_W = 16;
  localparam int unsigned F_VEC_SRC_STRIDE_INNER_LO = 96;
  localparam int unsigned F_VEC_SRC_STRIDE_INNER_W = 16;
  localparam int unsigned F_VEC_DST_BASE_LO = 112;
  localparam int unsigned F_VEC_DST_BASE_W = 16;
  localparam int unsigned F_VEC_DST_STRIDE_OUTER_LO = 128;
  localparam int unsigned F_VEC_DST_STRIDE_OUTER_W = 16;
  localparam int unsigned F_VEC_DST_STRIDE_INNER_LO = 144;
  localparam int unsigned F_VEC_DST_STRIDE_INNER_W = 16;
  localparam int unsigned F_VEC_ZERO_POINT_LO = 160;
  localparam int unsigned F_VEC_ZERO_POINT_W = 8;
  localparam int unsigned F_VEC_CLAMP_LO_LO = 168;
  localparam int unsigned F_VEC_CLAMP_LO_W = 8;
  localparam int unsigned F_VEC_CLAMP_HI_LO = 176;
  localparam int unsigned F_VEC_CLAMP_HI_W = 8;
  localparam int unsigned F_SYNC_OPCODE_LO = 0;
  localparam int unsigned F_SYNC_OPCODE_W = 4;
  localparam int unsigned F_SYNC_DEPS_LO = 4;
  localparam int unsigned F_SYNC_DEPS_W = 4;
  localparam int unsigned F_SYNC_TARGET_LO = 8;
  localparam int unsigned F_SYNC_TARGET_W = 2;

  typedef struct packed {
    logic [39:0] rsvd_216;
    logic [7:0] pad_value;
    logic [7:0] pad_right;
    logic [7:0] pad_left;
    logic [7:0] pad_bottom;
    logic [7:0] pad_top;
    logic [31:0] x_stride;
    logic [31:0] y_stride;
    logic [15:0] x_size;
    logic [15:0] y_size;
    logic [15:0] sram_base;
    logic [31:0] dram_base;
    logic [21:0] rsvd_10;
    logic [1:0] buffer;
    logic [3:0] deps;
    logic [3:0] opcode;
  } dma_insn_t;

  typedef struct packed {
    logic [95:0] rsvd_160;
    logic [15:0] act_stride_inner;
    logic [15:0] act_stride_outer;
    logic [15:0] act_base;
    logic [15:0] acc_stride_inner;
    logic [15:0] acc_stride_outer;
    logic [15:0] acc_base;
    logic [15:0] n_inner;
    logic [15:0] n_outer;
    logic [15:0] wgt;
    logic [5:0] rsvd_10;
    logic [1:0] mode;
    logic [3:0] deps;
    logic [3:0] opcode;
  } gemm_insn_t;

  typedef struct packed {
    logic [71:0] rsvd_184;
    logic [7:0] clamp_hi;
    logic [7:0] clamp_lo;
    logic [7:0] zero_point;
    logic [15:0] dst_stride_inner;
    logic [15:0] dst_stride_outer;
    logic [15:0] dst_base;
    logic [15:0] src_stride_inner;
    logic [15:0] src_stride_outer;
    logic [15:0] src_base;
    logic [15:0] n_inner;
    logic [15:0] n_outer;
    logic [15:0] param;
    logic [3:0] rsvd_12;
    logic [3:0] op;
    logic [3:0] deps;
    logic [3:0] opcode;
  } vec_insn_t;

  typedef struct packed {
    logic [245:0] rsvd_10;
    logic [1:0] target;
    logic [3:0] deps;
    logic [3:0] opcode;
  } sync_insn_t;

endpackage
/* verilator lint_on UNUSEDPARAM */
